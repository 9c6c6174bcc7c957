// Builds the console (console/index.html and console/src) into console/dist, which is committed and served
// by src/server/console.ts. The output must be the same on every machine (`npm run check:console`
// rebuilds and fails on a diff): no timestamps, content-hashed file names, no inline script or style.

import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const root = fileURLToPath(new URL(".", import.meta.url));

export default defineConfig({
  root,
  // Relative URLs: the page works at /console/ and behind a proxy that mounts the service under a prefix.
  base: "./",
  publicDir: "public",
  logLevel: "warn",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // Everything is a file the server serves under the CSP: no data: URIs, no inline preload polyfill.
    assetsInlineLimit: 0,
    modulePreload: false,
    cssCodeSplit: false,
    sourcemap: false,
    reportCompressedSize: false,
    rolldownOptions: {
      output: {
        entryFileNames: "assets/console-[hash].js",
        chunkFileNames: "assets/[name]-[hash].js",
        assetFileNames: "assets/[name]-[hash][extname]",
      },
    },
  },
});

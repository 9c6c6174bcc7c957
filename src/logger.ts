// The process logger: JSON lines on stdout (pino), with the places a secret could hide redacted.

import pino from "pino";
import type { Config } from "./config.ts";

export type Logger = pino.Logger;

export function createLogger(level: Config["logLevel"], destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "flip-authz" },
      redact: {
        paths: [
          "authorization",
          "*.authorization",
          "headers.authorization",
          "*.headers.authorization",
          "password",
          "*.password",
          "token",
          "*.token",
        ],
        censor: "[redacted]",
      },
      serializers: { err: pino.stdSerializers.err },
    },
    destination,
  );
}

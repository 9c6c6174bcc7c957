# syntax=docker/dockerfile:1
# flip-authz: build with npm on a full Node 24 image, run on distroless Node 24 (no shell, no npm, no
# compilers) as a non-root user. The TypeScript sources run as they are (Node 24 strips types).

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; better-sqlite3 ships prebuilt binaries, so nothing compiles.
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts
COPY bin ./bin
COPY src ./src
COPY gen ./gen
# The web console, built and committed (npm run build:console): served at /console/ unless AUTHZ_CONSOLE=false.
COPY console/dist ./console/dist
RUN mkdir -p /app/data

FROM gcr.io/distroless/nodejs24-debian12:nonroot AS runtime
WORKDIR /app
ENV NODE_ENV=production \
    DATABASE_URL=sqlite:/app/data/authz.db \
    AUTHZ_GRPC_LISTEN=0.0.0.0:50051 \
    AUTHZ_HTTP_LISTEN=0.0.0.0:8080
COPY --from=build --chown=nonroot:nonroot /app /app
USER nonroot
VOLUME ["/app/data"]
EXPOSE 50051 8080
# Listening on 0.0.0.0 needs credentials (AUTHZ_SERVICE_TOKENS or AUTHZ_JWT_ISSUER); see README "Security".
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/nodejs/bin/node", "bin/flip-authz.js", "healthcheck"]
# node itself is PID 1's program, so SIGTERM reaches the service and it shuts down gracefully.
ENTRYPOINT ["/nodejs/bin/node", "bin/flip-authz.js"]
CMD ["serve"]

// The logging the store needs: a pino-compatible subset, so the server can pass its pino logger and tests
// can pass a silent one.

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: Logger = {
  info() {},
  warn() {},
  error() {},
};

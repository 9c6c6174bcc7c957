// A follower's log of trouble with its upstream: one line when a problem starts or changes, a reminder
// while it lasts, and one line when it is over; never a line per failed call.

/** The part of a pino logger the follower uses. */
export interface UpstreamLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** How often an unchanged problem is logged again. */
const REMIND_MS = 30_000;

export class ProblemLog {
  readonly #logger: UpstreamLogger;
  #current: string | undefined;
  #loggedAt = 0;

  constructor(logger: UpstreamLogger) {
    this.#logger = logger;
  }

  get current(): string | undefined {
    return this.#current;
  }

  report(problem: string, fields: object = {}): void {
    const now = Date.now();
    if (problem === this.#current && now - this.#loggedAt < REMIND_MS) return;
    this.#current = problem;
    this.#loggedAt = now;
    this.#logger.warn(fields, problem);
  }

  /** The upstream answers again: say so once. */
  clear(message: string): void {
    if (this.#current === undefined) return;
    this.#current = undefined;
    this.#logger.info({}, message);
  }
}

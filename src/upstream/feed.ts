// A follower's change feed: one WatchChanges stream from the upstream, delivered in order, each change once.
// When the stream breaks it resumes after the last revision delivered (so nothing is skipped or repeated),
// and resyncs from scratch if the upstream no longer keeps that revision. The staleness bound lives here:
// the follower "hears" from its upstream when a probe shows it has every change the upstream had at that
// moment; only when that has not happened for AUTHZ_UPSTREAM_MAX_STALENESS_MS do the caches hear of an
// interruption (a shorter blip is invisible), and they resume once a probe shows the follower caught up.

import * as grpc from "@grpc/grpc-js";
import { AuthzService, ChangeKind, type WatchChangesResponse } from "../../gen/flip/authz/v1/authz_pb.ts";
import { isUuid } from "../authz/ids.ts";
import { formatRevision } from "../authz/revision.ts";
import type {
  Change,
  ChangeListener,
  ChangeSubscription,
  ChangeKind as Kind,
  Revision,
} from "../authz/store.ts";
import { MalformedAnswerError, revisionFrom } from "./answers.ts";
import { describeUpstreamError, statusOf, type UpstreamClient } from "./client.ts";
import type { ProblemLog, UpstreamLogger } from "./problems.ts";

const m = AuthzService.method;

const KINDS: Record<number, Kind> = {
  [ChangeKind.USER_ROLES]: "user_roles",
  [ChangeKind.ROLE_PERMISSIONS]: "role_permissions",
  [ChangeKind.PROFILE]: "profile",
};

/** Reconnect delays grow from this, doubling, up to MAX_BACKOFF_MS, each with jitter. */
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2000;
/** A stream that lived this long was a success: the next failure starts the backoff over. */
const HEALTHY_STREAM_MS = 5000;
/** Probes whose revision the stream has not reached yet, kept at most. */
const MAX_PENDING_PROBES = 100;

export interface UpstreamFeedOptions {
  logger: UpstreamLogger;
  problems: ProblemLog;
  maxStalenessMs: number;
  /** The upstream's revision now, to resync from. */
  currentRevision(): Promise<Revision>;
  /** Told of every revision delivered. */
  onDelivered(revision: Revision): void;
}

export class UpstreamFeed implements ChangeSubscription {
  readonly #client: UpstreamClient;
  readonly #listener: ChangeListener;
  readonly #options: UpstreamFeedOptions;
  readonly #probeMs: number;
  /** The last revision delivered: a new stream resumes after it. */
  #cursor: Revision;
  #stream: grpc.ClientReadableStream<WatchChangesResponse> | null = null;
  #streamOpenedAt = 0;
  #failures = 0;
  #closed = false;
  /** True once the caches were told: past the staleness bound, until caught up. */
  #interrupted = false;
  #lastHeard = Date.now();
  #pendingProbes: { sentAt: number; revision: Revision }[] = [];
  #probing = false;
  #probeTimer: NodeJS.Timeout | undefined;
  #staleTimer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;

  constructor(
    client: UpstreamClient,
    after: Revision,
    listener: ChangeListener,
    options: UpstreamFeedOptions,
  ) {
    this.#client = client;
    this.#cursor = after;
    this.#listener = listener;
    this.#options = options;
    // Five probes per bound, so a few lost ones do not matter; not more often than every 50 ms.
    this.#probeMs = Math.min(1000, Math.max(50, Math.floor(options.maxStalenessMs / 5)));
  }

  start(): void {
    this.#open();
    this.#armStaleness();
    this.#probeTimer = setInterval(() => this.#probe(), this.#probeMs);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#probeTimer);
    clearTimeout(this.#staleTimer);
    clearTimeout(this.#retryTimer);
    const stream = this.#stream;
    this.#stream = null;
    stream?.cancel();
  }

  #open(): void {
    if (this.#closed) return;
    const stream = this.#client.stream(m.watchChanges, { after: formatRevision(this.#cursor) });
    this.#stream = stream;
    this.#streamOpenedAt = Date.now();
    stream.on("data", (message: WatchChangesResponse) => {
      if (this.#stream !== stream) return;
      try {
        this.#deliver([this.#parse(message)]);
        this.#failures = 0;
      } catch (error) {
        // Not a change a flip-authz sends: drop this stream, resume after the last good one.
        this.#stream = null;
        stream.cancel();
        this.#broken(error);
      }
    });
    stream.on("error", (error: Error) => this.#ended(stream, error));
    stream.on("end", () => this.#ended(stream, new Error("the upstream ended the change stream")));
  }

  #parse(message: WatchChangesResponse): Change {
    const revision = revisionFrom(message.revision, "WatchChanges revision");
    const kind = KINDS[message.kind];
    if (kind === undefined)
      throw new MalformedAnswerError(`WatchChanges kind ${message.kind} is not a change kind`);
    if (message.userId !== "" && !isUuid(message.userId)) {
      throw new MalformedAnswerError(
        `WatchChanges user_id ${JSON.stringify(message.userId.slice(0, 40))} is not a UUID`,
      );
    }
    if (revision <= this.#cursor) {
      throw new MalformedAnswerError(
        `WatchChanges sent revision ${revision} after ${this.#cursor}: out of order`,
      );
    }
    return { revision, kind, userId: message.userId === "" ? null : message.userId.toLowerCase() };
  }

  #deliver(changes: Change[]): void {
    const last = changes[changes.length - 1];
    if (last === undefined) return;
    this.#cursor = last.revision;
    this.#options.onDelivered(last.revision);
    try {
      this.#listener.onChanges(changes);
    } catch (error) {
      this.#options.logger.error({ err: error }, "change listener threw");
    }
    const caughtUp = this.#pendingProbes.filter((probe) => probe.revision <= this.#cursor);
    if (caughtUp.length > 0) {
      this.#pendingProbes = this.#pendingProbes.filter((probe) => probe.revision > this.#cursor);
      this.#heard(Math.max(...caughtUp.map((probe) => probe.sentAt)));
    }
  }

  #ended(stream: grpc.ClientReadableStream<WatchChangesResponse>, error: Error): void {
    if (this.#stream !== stream || this.#closed) return;
    this.#stream = null;
    const status = statusOf(error);
    if (status?.code === grpc.status.INVALID_ARGUMENT && status.details.startsWith("after:")) {
      this.#options.problems.report(
        `the upstream at ${this.#client.target} no longer keeps the revision this follower applied last: resyncing from scratch`,
        { after: this.#cursor, upstream: status.details },
      );
      void this.#resync();
      return;
    }
    this.#broken(error);
  }

  /** The stream failed: say why, then resume after the last revision delivered, with backoff. */
  #broken(error: unknown): void {
    const problem =
      error instanceof MalformedAnswerError
        ? `the upstream at ${this.#client.target} sent a malformed change (${error.message})`
        : describeUpstreamError(error, this.#client.target);
    this.#options.problems.report(`the change stream broke: ${problem}; resuming`, { after: this.#cursor });
    this.#retry(() => this.#open());
  }

  #retry(action: () => void): void {
    if (Date.now() - this.#streamOpenedAt > HEALTHY_STREAM_MS) this.#failures = 0;
    const delay =
      Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** this.#failures) * (0.5 + Math.random() / 2);
    this.#failures++;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(action, delay);
  }

  /**
   * The upstream no longer has the changes after our cursor: everything may have changed. Delivered as
   * changes of every kind, for every user, at the upstream's current revision: the caches drop all users
   * and reload the catalog, then the stream goes on from there.
   */
  async #resync(): Promise<void> {
    try {
      const latest = await this.#options.currentRevision();
      if (this.#closed) return;
      if (latest > this.#cursor) {
        this.#deliver([
          { revision: latest, kind: "role_permissions", userId: null },
          { revision: latest, kind: "user_roles", userId: null },
          { revision: latest, kind: "profile", userId: null },
        ]);
      }
      this.#open();
    } catch (error) {
      if (this.#closed) return;
      this.#options.problems.report(
        `resyncing: ${describeUpstreamError(error, this.#client.target)}; retrying`,
      );
      this.#retry(() => void this.#resync());
    }
  }

  /** Asks what the upstream has applied now; heard from it once the stream has delivered that much. */
  #probe(): void {
    if (this.#closed || this.#probing) return;
    this.#probing = true;
    const sentAt = Date.now();
    this.#client
      .unary(m.listPermissions, {}, { deadline: sentAt + 2 * this.#probeMs })
      .then(
        (answer) => {
          const revision = revisionFrom(answer.readAt, "ListPermissions read_at");
          if (revision <= this.#cursor) this.#heard(sentAt);
          else {
            this.#pendingProbes.push({ sentAt, revision });
            if (this.#pendingProbes.length > MAX_PENDING_PROBES) this.#pendingProbes.shift();
          }
        },
        (error: unknown) => {
          if (this.#closed) return;
          const problem =
            error instanceof MalformedAnswerError
              ? `the upstream at ${this.#client.target} sent a malformed answer (${error.message})`
              : describeUpstreamError(error, this.#client.target);
          this.#options.problems.report(problem);
        },
      )
      .finally(() => {
        this.#probing = false;
      });
  }

  /** At `at`, the upstream had nothing this follower has not applied. */
  #heard(at: number): void {
    if (at > this.#lastHeard) this.#lastHeard = at;
    if (this.#stream === null || this.#closed) return;
    this.#options.problems.clear(
      `the upstream at ${this.#client.target} answers and this follower is caught up`,
    );
    if (this.#interrupted) {
      this.#interrupted = false;
      this.#options.logger.info(
        { revision: this.#cursor },
        "caught up with the upstream: serving from the caches again",
      );
      try {
        this.#listener.onResumed();
      } catch (error) {
        this.#options.logger.error({ err: error }, "change listener threw");
      }
    }
    this.#armStaleness();
  }

  #armStaleness(): void {
    clearTimeout(this.#staleTimer);
    if (this.#interrupted || this.#closed) return;
    const left = this.#lastHeard + this.#options.maxStalenessMs - Date.now();
    this.#staleTimer = setTimeout(() => this.#expire(), Math.max(0, left));
  }

  #expire(): void {
    if (this.#interrupted || this.#closed) return;
    const silentMs = Date.now() - this.#lastHeard;
    if (silentMs < this.#options.maxStalenessMs) {
      this.#armStaleness();
      return;
    }
    this.#interrupted = true;
    const cause = this.#options.problems.current ?? "the upstream is behind this follower's stream";
    this.#options.logger.warn(
      { silentMs, maxStalenessMs: this.#options.maxStalenessMs, cause },
      "no word from the upstream within AUTHZ_UPSTREAM_MAX_STALENESS_MS: caches flushed, answering by asking the upstream, NOT_SERVING until caught up",
    );
    try {
      this.#listener.onInterrupted(new Error(`no word from the upstream for ${silentMs} ms: ${cause}`));
    } catch (error) {
      this.#options.logger.error({ err: error }, "change listener threw");
    }
  }
}

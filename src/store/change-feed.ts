// Live change notifications. PostgreSQL: a dedicated LISTEN connection (not from the pool) that reconnects
// with backoff and replays what it missed from the change log. SQLite: this process's own writes poke the
// feed after commit, and a cheap poll of the revision counter sees other processes' writes.
//
// LISTEN needs a session of its own. Behind a transaction pooler (PgBouncer pool_mode=transaction, RDS
// Proxy) the LISTEN runs on whichever server connection the statement got and notifications go nowhere.
// So the PostgreSQL feed LISTENs on AUTHZ_LISTEN_DATABASE_URL when set, and at start sends itself a probe
// notification through DATABASE_URL: when it does not arrive, the feed says why (log and health) and polls
// the change log through DATABASE_URL instead.

import { randomBytes } from "node:crypto";
import pg from "pg";
import type { Change, ChangeKind, ChangeListener, ChangeSubscription, Revision } from "../authz/store.ts";
import { redactDatabase } from "../config.ts";
import type { Logger } from "./logger.ts";

export const CHANNEL = "flip_authz_changes";
const CATCH_UP_BATCH = 1000;
/**
 * How often the LISTEN connection is asked for the current revision. A connection that died without a
 * word (a partition, a dropped NAT entry: no RST) would otherwise leave the caches trusting a silent feed
 * for as long as TCP keepalive takes (hours); a revision ahead of what was delivered is caught up at once.
 */
export const HEARTBEAT_MS = 5_000;
const HEARTBEAT_TIMEOUT_MS = 3_000;
/** How long the start-up probe waits for its own notification (a direct session delivers it in ms). */
export const PROBE_TIMEOUT_MS = 2_000;
/** How often the change log is polled when LISTEN does not work. */
export const FALLBACK_POLL_MS = 250;

/** What a feed needs from the store. */
export interface ChangeSource {
  changesAfter(after: Revision, limit: number): Promise<Change[]>;
  currentRevision(): Promise<Revision>;
}

const KINDS = new Set<string>(["user_roles", "role_permissions", "profile"]);

/** `<revision>:<kind>:<user id or empty>`, as the trigger sends it; null when malformed. */
export function parseNotification(payload: string | undefined): Change | null {
  const [revision, kind, userId, ...rest] = (payload ?? "").split(":");
  if (rest.length > 0 || revision === undefined || kind === undefined || userId === undefined) return null;
  if (!/^\d+$/.test(revision) || !KINDS.has(kind)) return null;
  return { revision: Number(revision), kind: kind as ChangeKind, userId: userId === "" ? null : userId };
}

/** Delivers changes in order, each once, from a cursor; the feeds below share it. */
abstract class Feed implements ChangeSubscription {
  protected lastSeen: Revision;
  protected closed = false;
  protected interrupted = false;
  protected readonly source: ChangeSource;
  protected readonly listener: ChangeListener;
  protected readonly logger: Logger;
  /** Serializes deliveries and catch-ups so changes leave in revision order. */
  private queue: Promise<void> = Promise.resolve();

  constructor(after: Revision, source: ChangeSource, listener: ChangeListener, logger: Logger) {
    this.lastSeen = after;
    this.source = source;
    this.listener = listener;
    this.logger = logger;
  }

  abstract close(): Promise<void>;

  protected enqueue(task: () => Promise<void>): Promise<void> {
    const next = this.queue.then(task);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Reads and delivers everything after lastSeen; throws when the database cannot be read. */
  protected async catchUp(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      const changes = await this.source.changesAfter(this.lastSeen, CATCH_UP_BATCH);
      this.deliver(changes);
      if (changes.length < CATCH_UP_BATCH) return;
    }
  }

  protected deliver(changes: Change[]): void {
    const fresh = changes.filter((change) => change.revision > this.lastSeen);
    if (fresh.length === 0 || this.closed) return;
    this.lastSeen = fresh[fresh.length - 1]?.revision ?? this.lastSeen;
    try {
      this.listener.onChanges(fresh);
    } catch (error) {
      this.logger.error({ err: error }, "change listener threw");
    }
  }

  /** Catches up when the revision counter moved; reports the database lost and found again. */
  protected poll(): Promise<void> {
    return this.enqueue(async () => {
      if (this.closed) return;
      try {
        if ((await this.source.currentRevision()) > this.lastSeen) await this.catchUp();
        if (this.interrupted) {
          this.interrupted = false;
          this.safely(() => this.listener.onResumed());
        }
      } catch (error) {
        if (!this.interrupted && !this.closed) {
          this.interrupted = true;
          this.safely(() => this.listener.onInterrupted(error as Error));
        }
      }
    });
  }

  protected safely(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.logger.error({ err: error }, "change listener threw");
    }
  }
}

/** Where the feed connects: `url` is DATABASE_URL (the pool's), `listenUrl` AUTHZ_LISTEN_DATABASE_URL. */
export interface FeedDatabase {
  url: string;
  listenUrl?: string;
}

export class PostgresFeed extends Feed {
  /** The LISTEN connection's URL. */
  private readonly url: string;
  /** DATABASE_URL: where writes (and so notifications) come from; the probe notifies through it. */
  private readonly poolUrl: string;
  private client: pg.Client | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private backoffMs = 100;
  private readonly heartbeat: NodeJS.Timeout;
  private pollTimer: NodeJS.Timeout | null = null;
  /** Why LISTEN is not used (the feed polls instead); undefined while it is. */
  degraded: string | undefined;

  constructor(
    database: FeedDatabase,
    after: Revision,
    source: ChangeSource,
    listener: ChangeListener,
    logger: Logger,
  ) {
    super(after, source, listener, logger);
    this.url = database.listenUrl ?? database.url;
    this.poolUrl = database.url;
    this.heartbeat = setInterval(() => void this.beat(), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Asks the LISTEN connection itself: no answer in time means it is gone; a newer revision, a catch-up. */
  private async beat(): Promise<void> {
    const client = this.client;
    if (this.closed || !client) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      // LISTEN again first (a no-op when listening): the connection keeps showing as LISTEN in
      // pg_stat_activity, where operators and tests look for it.
      const answer = client.query(
        `LISTEN ${CHANNEL}; SELECT revision FROM authz_revision WHERE id = 1`,
      ) as unknown as Promise<pg.QueryResult<{ revision: string }>[]>;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("the LISTEN connection did not answer a heartbeat")),
          HEARTBEAT_TIMEOUT_MS,
        );
      });
      const rows = (await Promise.race([answer, timeout]))[1]?.rows ?? [];
      if (Number(rows[0]?.revision ?? 0) > this.lastSeen) {
        await this.enqueue(() => this.catchUp()).catch((error) => this.lost(client, error as Error));
      }
    } catch (error) {
      this.lost(client, error as Error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Connects, LISTENs, then replays from `after`; rejects when the first connection fails. */
  async start(): Promise<void> {
    await this.connect();
    const problem = await this.probe();
    if (problem !== null) await this.fallBack(problem);
    await this.enqueue(() => this.catchUp());
  }

  /**
   * LISTENs on a fresh channel and NOTIFYs it through DATABASE_URL: null when the notification arrives,
   * else what is in the way. A transaction pooler shows itself by the backend it hands out: pg's
   * BackendKeyData names one process, `pg_backend_pid()` another.
   */
  private async probe(): Promise<string | null> {
    const client = this.client;
    if (!client) return null;
    const channel = `flip_authz_probe_${randomBytes(6).toString("hex")}`;
    const token = randomBytes(8).toString("hex");
    let heard!: (arrived: boolean) => void;
    const arrival = new Promise<boolean>((resolve) => {
      heard = resolve;
    });
    const onNotification = (message: pg.Notification) => {
      if (message.channel === channel && message.payload === token) heard(true);
    };
    client.on("notification", onNotification);
    let timer: NodeJS.Timeout | undefined;
    let pooled = false;
    try {
      await client.query(`LISTEN ${channel}`);
      const pids = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
      const own = (client as unknown as { processID?: number }).processID;
      pooled = own !== undefined && own !== null && Number(pids.rows[0]?.pid) !== own;
      const notifier = new pg.Client({
        connectionString: this.poolUrl,
        connectionTimeoutMillis: 5_000,
        application_name: "flip-authz change feed probe",
      });
      notifier.on("error", () => {});
      try {
        await notifier.connect();
        await notifier.query("SELECT pg_notify($1, $2)", [channel, token]);
      } finally {
        await notifier.end().catch(() => {});
      }
      timer = setTimeout(() => heard(false), PROBE_TIMEOUT_MS);
      if (await arrival) {
        // LISTEN last, so pg_stat_activity shows the connection as the LISTEN one (as the heartbeat does).
        await client.query(`UNLISTEN ${channel}`).catch(() => {});
        await client.query(`LISTEN ${CHANNEL}`).catch(() => {});
        return null;
      }
    } finally {
      clearTimeout(timer);
      client.off("notification", onNotification);
    }
    const where = redactDatabase({ kind: "postgres", url: this.url });
    return pooled
      ? `LISTEN does not work through ${where}: a transaction pooler (such as PgBouncer with ` +
          "pool_mode=transaction, or RDS Proxy) hands each statement another server connection; set " +
          `AUTHZ_LISTEN_DATABASE_URL to a direct session. Polling the change log every ${FALLBACK_POLL_MS} ms instead`
      : `a notification sent through DATABASE_URL did not reach the LISTEN connection at ${where} within ` +
          `${PROBE_TIMEOUT_MS} ms (a pooler, or another database?). Polling the change log every ` +
          `${FALLBACK_POLL_MS} ms instead`;
  }

  /** Gives up the LISTEN connection for polling the change log through the store (the pool). */
  private async fallBack(reason: string): Promise<void> {
    this.degraded = reason;
    this.logger.warn({ changeFeed: "polling" }, reason);
    clearInterval(this.heartbeat);
    const client = this.client;
    this.client = null;
    if (client) {
      client.removeAllListeners("end");
      await client.end().catch(() => {});
    }
    this.pollTimer = setInterval(() => void this.poll(), FALLBACK_POLL_MS);
    this.pollTimer.unref();
    this.safely(() => this.listener.onDegraded?.(reason));
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.url,
      connectionTimeoutMillis: 5_000,
      keepAlive: true,
      application_name: "flip-authz change feed",
    });
    // Without a listener an 'error' from a dropped connection would crash the process.
    client.on("error", (error) => this.lost(client, error));
    client.on("end", () => this.lost(client, new Error("the LISTEN connection ended")));
    client.on("notification", (message) => {
      if (message.channel !== CHANNEL || client !== this.client) return;
      const change = parseNotification(message.payload);
      if (!change) {
        this.logger.warn({ payload: message.payload }, "ignored a malformed change notification");
        return;
      }
      void this.enqueue(async () => {
        if (change.revision <= this.lastSeen) return;
        if (change.revision === this.lastSeen + 1) this.deliver([change]);
        else await this.catchUp(); // a gap: the log has what the notifications skipped
      }).catch((error) => this.lost(client, error as Error));
    });
    this.client = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (error) {
      this.client = null;
      client.removeAllListeners("end");
      await client.end().catch(() => {});
      throw error;
    }
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.closed || client !== this.client) return;
    this.client = null;
    client.removeAllListeners("end");
    client.end().catch(() => {});
    if (!this.interrupted) {
      this.interrupted = true;
      this.logger.warn({ err: error.message }, "change feed interrupted; reconnecting");
      this.safely(() => this.listener.onInterrupted(error));
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.retryTimer) return;
    const delay = this.backoffMs * (0.5 + Math.random());
    this.backoffMs = Math.min(this.backoffMs * 2, 5_000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.reconnect();
    }, delay);
  }

  private async reconnect(): Promise<void> {
    if (this.closed) return;
    try {
      await this.connect();
      await this.enqueue(() => this.catchUp());
    } catch (error) {
      if (this.client) {
        const client = this.client;
        this.client = null;
        client.removeAllListeners("end");
        await client.end().catch(() => {});
      }
      this.logger.warn({ err: (error as Error).message }, "change feed reconnect failed");
      this.scheduleReconnect();
      return;
    }
    if (this.closed) return;
    this.backoffMs = 100;
    this.interrupted = false;
    this.logger.info({ revision: this.lastSeen }, "change feed resumed");
    this.safely(() => this.listener.onResumed());
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeat);
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const client = this.client;
    this.client = null;
    if (client) {
      client.removeAllListeners("end");
      await client.end().catch(() => {});
    }
  }
}

export class PollingFeed extends Feed {
  private timer: NodeJS.Timeout | null = null;
  private readonly onClose: (feed: PollingFeed) => void;

  constructor(
    after: Revision,
    source: ChangeSource,
    listener: ChangeListener,
    logger: Logger,
    intervalMs: number,
    onClose: (feed: PollingFeed) => void,
  ) {
    super(after, source, listener, logger);
    this.onClose = onClose;
    this.timer = setInterval(() => void this.poke(), intervalMs);
    this.timer.unref();
  }

  async start(): Promise<void> {
    await this.enqueue(() => this.catchUp());
  }

  /** Checks for new revisions now (after a local commit, or on the poll timer). */
  poke(): Promise<void> {
    return this.poll();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.onClose(this);
  }
}

// Time-ordered UUIDs (RFC 9562 version 7) for audit rows: the listing orders by (timestamp, id), and
// timestamps are milliseconds, so two events of one millisecond must still sort in the order they happened.
// Within a process ids only grow: the 12 bits after the version count within a millisecond.

import { randomBytes } from "node:crypto";

let lastMs = 0;
let counter = 0;

export function uuidv7(now: number = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    counter = 0;
  } else if (++counter > 0xfff) {
    // 4096 ids in one millisecond (or a clock that went back): borrow the next millisecond.
    lastMs++;
    counter = 0;
  }
  const bytes = randomBytes(16);
  bytes.writeUIntBE(lastMs, 0, 6);
  bytes[6] = 0x70 | (counter >> 8);
  bytes[7] = counter & 0xff;
  bytes[8] = 0x80 | ((bytes[8] ?? 0) & 0x3f);
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

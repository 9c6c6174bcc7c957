// A bounded least-recently-used map: a Map from key to slot, and the recency order as a doubly linked list
// of slots in typed arrays. A hit relinks two slots and allocates nothing. (The former delete-and-re-set on
// a Map made every hit append a Map entry: with 100,000 users cached, touching one hot key cost ~0.6 ms,
// as V8 kept rebuilding the table.)

const NONE = -1;
const INITIAL_SLOTS = 1024;

export class Lru<K, V> {
  readonly capacity: number;
  readonly #slots = new Map<K, number>();
  #keys: (K | undefined)[] = [];
  #values: (V | undefined)[] = [];
  #newer = new Int32Array(0);
  #older = new Int32Array(0);
  /** Most recently used slot. */
  #head = NONE;
  /** Least recently used slot: evicted first. */
  #tail = NONE;
  /** Slots freed by delete(), reused before new ones. */
  #free: number[] = [];
  /** Slots handed out so far (the arrays' used length). */
  #used = 0;

  constructor(capacity: number) {
    this.capacity = Math.max(0, Math.trunc(capacity));
  }

  get size(): number {
    return this.#slots.size;
  }

  get(key: K): V | undefined {
    const slot = this.#slots.get(key);
    if (slot === undefined) return undefined;
    this.#toFront(slot);
    return this.#values[slot];
  }

  set(key: K, value: V): void {
    if (this.capacity === 0) return;
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      slot = this.#take();
      this.#keys[slot] = key;
      this.#slots.set(key, slot);
      this.#link(slot);
    } else {
      this.#toFront(slot);
    }
    this.#values[slot] = value;
  }

  delete(key: K): void {
    const slot = this.#slots.get(key);
    if (slot === undefined) return;
    this.#slots.delete(key);
    this.#unlink(slot);
    this.#keys[slot] = undefined;
    this.#values[slot] = undefined;
    this.#free.push(slot);
  }

  clear(): void {
    this.#slots.clear();
    this.#keys = [];
    this.#values = [];
    this.#newer = new Int32Array(0);
    this.#older = new Int32Array(0);
    this.#head = NONE;
    this.#tail = NONE;
    this.#free = [];
    this.#used = 0;
  }

  /** A slot for a new key: a freed one, a fresh one, or the least recently used one's. */
  #take(): number {
    const freed = this.#free.pop();
    if (freed !== undefined) return freed;
    if (this.#used < this.capacity) {
      if (this.#used === this.#newer.length) this.#grow();
      return this.#used++;
    }
    const oldest = this.#tail;
    this.#slots.delete(this.#keys[oldest] as K);
    this.#unlink(oldest);
    return oldest;
  }

  #grow(): void {
    const length = Math.min(this.capacity, Math.max(INITIAL_SLOTS, this.#newer.length * 2));
    const newer = new Int32Array(length);
    const older = new Int32Array(length);
    newer.set(this.#newer);
    older.set(this.#older);
    this.#newer = newer;
    this.#older = older;
  }

  #toFront(slot: number): void {
    if (slot === this.#head) return;
    this.#unlink(slot);
    this.#link(slot);
  }

  /** Puts a detached slot at the front. */
  #link(slot: number): void {
    this.#newer[slot] = NONE;
    this.#older[slot] = this.#head;
    if (this.#head !== NONE) this.#newer[this.#head] = slot;
    this.#head = slot;
    if (this.#tail === NONE) this.#tail = slot;
  }

  #unlink(slot: number): void {
    const newer = this.#newer[slot] as number;
    const older = this.#older[slot] as number;
    if (newer === NONE) this.#head = older;
    else this.#older[newer] = older;
    if (older === NONE) this.#tail = newer;
    else this.#newer[older] = newer;
  }
}

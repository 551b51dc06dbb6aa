export interface Entry<V> {
  value: V;
  expires: number;
}

export class TtlCache<V> {
  private entries = new Map<string, Entry<V>>();

  constructor(private ttlMs: number) {}

  get(key: string, now: number = Date.now()): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined || entry.expires <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key: string, value: V, now: number = Date.now()): void {
    this.entries.set(key, { value, expires: now + this.ttlMs });
  }
}

// Debounce and throttle helpers (fixture).
export function debounce(callback, waitMs) {
  let timer = null;
  return function debounced(...args) {
    if (timer !== null) {
      clearTimeout(timer);
    }
    timer = setTimeout(() => {
      timer = null;
      callback.apply(this, args);
    }, waitMs);
  };
}

export class RateLimiter {
  constructor(limit, windowMs) {
    this.limit = limit;
    this.windowMs = windowMs;
    this.calls = [];
  }

  allow(now = Date.now()) {
    this.calls = this.calls.filter((t) => now - t < this.windowMs);
    if (this.calls.length < this.limit) {
      this.calls.push(now);
      return true;
    }
    return false;
  }
}

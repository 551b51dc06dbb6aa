import time


def retry_with_backoff(operation, attempts=5, first_delay=0.1, factor=2.0, retry_on=(OSError,)):
    """Call `operation` until it succeeds, sleeping longer after each failure."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except retry_on:
            if attempt == attempts:
                raise
            time.sleep(delay)
            delay *= factor
    return None


def chunked(sequence, size):
    if size <= 0:
        raise ValueError("size must be positive")
    for index in range(0, len(sequence), size):
        yield sequence[index:index + size]

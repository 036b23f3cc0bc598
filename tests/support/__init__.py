"""Code the tests (and the benchmarks) share, which is not part of the product: exact
neighbour search to measure the index against, synthetic vector collections, index
helpers that only tests need, and the launcher of a real server."""

"""The pure core: task and worker state, queries, failure grouping, stats, masking. No Flask, no I/O."""

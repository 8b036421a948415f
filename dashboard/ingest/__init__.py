"""Events in: the reader process, decoding, snapshots, seeding from `inspect`."""

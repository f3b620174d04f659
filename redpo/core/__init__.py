"""The shared vocabulary of every stage: samples, relation schemas, hashes, results-folder I/O and the manifest."""

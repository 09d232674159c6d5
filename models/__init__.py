"""SPGNet networks: one module per block type; `models.build` maps a config onto them, `models.variants` holds the
generator registry, `models.pipeline` the test-time path from a checkpoint to images."""

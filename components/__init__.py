"""EmoFlow pipeline steps: one module per stage, each a plain function of settings and paths."""

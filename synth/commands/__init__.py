"""The `synth` commands: each module is a thin layer (its `Config` and `main`) over the libraries below."""

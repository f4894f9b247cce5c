"""Pipeline steps: each one glues core logic to adapters. KFP components, the CLI and servers call these."""

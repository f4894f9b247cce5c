"""AWS definitions hybridml exports: Step Functions state machines and the EventBridge rule (pure data)."""

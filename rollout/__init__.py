"""vLLM rollout: the engine wrapped in Ray actors, and a pool of them."""

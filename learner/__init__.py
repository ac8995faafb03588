"""Learners: Ray Train SFT, the DeepSpeed GRPO learner group, and weight sync to rollout actors."""

"""Fine-tuning on Ray Train: examples (data), DeepSpeed config (dsconfig), memory plan
(plan), the per-worker loop (worker), the TorchTrainer (trainer) and export (export)."""

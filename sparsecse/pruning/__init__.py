"""The method (METHOD.md sections 3-8): unit gates and weight masks, alignment/uniformity importance,
the Sparsifier and its events, the removal of gated units and layers, recovery by distillation,
the study after training, and pruning to a speed target (timing, the latency model, the allocation)."""

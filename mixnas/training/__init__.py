"""Full training of one architecture: recipes, the trainer, checkpoints and a pickle-free model loader."""

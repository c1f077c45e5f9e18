"""The experiments behind raysys's claims, rerunnable on users' own settings: instruction
diversity (raysys.experiments.diversity) and the novelty check (raysys.experiments.novelty)."""

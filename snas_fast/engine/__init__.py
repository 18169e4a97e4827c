"""The engine every strategy shares: one training loop (:mod:`.loop`) with callbacks, run directories
(:mod:`.rundir`), settings with their flags (:mod:`.config`), data (:mod:`.data`), seeds (:mod:`.seeds`), many
processes (:mod:`.distributed`) and the retraining of a genotype (:mod:`.retrain`, the one evaluation). It imports
no strategy and no plotting."""

"""Plots: the figures (:mod:`.plots`, matplotlib's Agg canvas, no pyplot) and the loop callbacks that write them
(:mod:`.callbacks`). Imports anything below it; nothing below imports it."""

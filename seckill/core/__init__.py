"""The in-process half of a buy: sale views and the sale cache, limits, the local shield."""

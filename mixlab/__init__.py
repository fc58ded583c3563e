"""mixlab: deep clustering with mixture models and EM."""

"""Pure update rules, one solver family per module; the scheduler classes only wire configs to them."""

"""Loading plugins (the pluggy manager) and the component registry they fill."""

"""tenantfpm: PHP-FPM's process management with every pool an isolated tenant."""

__version__ = "0.1.0"

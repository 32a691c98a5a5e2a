"""Custom ``faust -A app <command>`` commands."""

"""Speed benchmark of the adaptation update: settings, timing and the report."""

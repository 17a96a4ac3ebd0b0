"""Sources: fetch feeds (RSS, Atom, JSON Feed) and turn them into plain entries."""

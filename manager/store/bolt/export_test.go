package bolt

// SetPruneChunk sets how many tasks one prune transaction examines, so that
// tests can cross chunk boundaries with a handful of tasks.
func (db *DB) SetPruneChunk(n int) { db.pruneChunk = n }

func (db *DB) SetScrubChunk(n int) { db.scrubChunk = n }

package handler

import "sync"

// kasseWriteMu serializes write commands. FerretDB v1's SQLite handler reads the matching documents,
// applies the update in Go and writes them back outside one transaction (FerretDB issues #3017, #3040),
// so two concurrent conditional updates of one document could both succeed (lost updates, oversell).
// MongoDB applies each single-document write atomically; this lock restores that guarantee locally.
var kasseWriteMu sync.Mutex

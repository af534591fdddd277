package redisstore

import "fmt"

// Every key of one document carries the hash tag {doc:<id>}, so all the
// keys a script touches live in the same Redis Cluster slot. The
// persistence shards carry their own tag: they are written by separate
// commands, never from inside a document's script.

func metaKey(doc string) string         { return "tandem:{doc:" + doc + "}:meta" }
func logKey(doc string) string          { return "tandem:{doc:" + doc + "}:log" }
func opsChannel(doc string) string      { return "tandem:{doc:" + doc + "}:ops" }
func presenceKey(doc string) string     { return "tandem:{doc:" + doc + "}:presence" }
func presenceExpKey(doc string) string  { return "tandem:{doc:" + doc + "}:presence:exp" }
func presenceChannel(doc string) string { return "tandem:{doc:" + doc + "}:presence:events" }
func persistShardKey(shard int) string  { return fmt.Sprintf("tandem:{persist:%d}", shard) }
func deadLetterKey() string             { return "tandem:{persist:dead}" }

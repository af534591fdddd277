package redisstore

import "fmt"

// Every key of one document carries the hash tag {doc:<id>}, so all the
// keys a script touches live in the same Redis Cluster slot. The
// persistence shards carry their own tag: they are written by separate
// commands, never from inside a document's script. A replica's inbox is a
// pub/sub channel named after the replica.

func metaKey(doc string) string          { return "tandem:{doc:" + doc + "}:meta" }
func logKey(doc string) string           { return "tandem:{doc:" + doc + "}:log" }
func opsChannel(doc string) string       { return "tandem:{doc:" + doc + "}:ops" }
func presenceKey(doc string) string      { return "tandem:{doc:" + doc + "}:presence" }
func presenceExpKey(doc string) string   { return "tandem:{doc:" + doc + "}:presence:exp" }
func presenceChannel(doc string) string  { return "tandem:{doc:" + doc + "}:presence:events" }
func ownerKey(doc string) string         { return "tandem:{doc:" + doc + "}:owner" }
func inboxChannel(replica string) string { return "tandem:{replica:" + replica + "}:inbox" }
func persistShardKey(shard int) string   { return fmt.Sprintf("tandem:{persist:%d}", shard) }

package redisstore

import (
	"fmt"
	"strings"
)

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

// keySlot is the Redis Cluster hash slot of a key or sharded channel:
// CRC16 (XMODEM) of its hash tag (the text between the first "{" and the
// next "}", when not empty) or of the whole key, modulo 16384.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

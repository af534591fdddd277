package redisstore

// OwnNotifications counts the notifications l's subscriptions served from
// the entries l's own Appends left in memory.
func OwnNotifications(l *Log) int64 { return l.own.hits.Load() }

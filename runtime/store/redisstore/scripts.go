package redisstore

import (
	"embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFiles embed.FS

// scripts holds the parsed Lua scripts. go-redis runs them with EVALSHA and
// falls back to EVAL when the server does not have them cached (after a
// restart), so no explicit SCRIPT LOAD bookkeeping is needed.
type scripts struct {
	meta, append, read, persisted     *redis.Script
	presUpdate, presRemove, presSweep *redis.Script
	presRefresh                       *redis.Script
	ownerClaim, ownerRelease          *redis.Script
	delete                            *redis.Script
}

func loadScripts() (*scripts, error) {
	load := func(name string) (*redis.Script, error) {
		src, err := luaFiles.ReadFile("lua/" + name + ".lua")
		if err != nil {
			return nil, fmt.Errorf("read embedded script %s: %w", name, err)
		}
		return redis.NewScript(string(src)), nil
	}
	s := &scripts{}
	for name, dst := range map[string]**redis.Script{
		"meta": &s.meta, "append": &s.append, "read": &s.read, "persisted": &s.persisted,
		"presence_update": &s.presUpdate, "presence_remove": &s.presRemove, "presence_sweep": &s.presSweep, "presence_refresh": &s.presRefresh,
		"owner_claim": &s.ownerClaim, "owner_release": &s.ownerRelease, "delete": &s.delete,
	} {
		sc, err := load(name)
		if err != nil {
			return nil, err
		}
		*dst = sc
	}
	return s, nil
}

package specs

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// Defaults mirrored from the CRD's +kubebuilder:default markers. The API
// server applies the markers; the builders apply these too so that an object
// that skipped defaulting (a unit test, an old stored object) still builds.
const (
	DefaultReplicas            int32 = 2
	DefaultGracePeriodSeconds  int64 = 60
	DefaultFlushInterval             = 500 * time.Millisecond
	DefaultFlushBatch          int32 = 500
	DefaultStorageSize               = "1Gi"
	DefaultRedisImage                = "redis:7.0"
	DefaultPostgresImage             = "postgres:15"
	DefaultAppendFsync               = collabv1.AppendFsync("everysec")
	DefaultCookieName                = "tandem-affinity"
	DefaultCookieMaxAge        int32 = 86400
	DefaultProxyTimeoutSeconds int32 = 3600
	DefaultCNPGInstances       int32 = 3
	// PreStopSleepSeconds lets endpoints controllers and ingress controllers
	// stop routing new WebSockets to a terminating pod before it gets SIGTERM.
	PreStopSleepSeconds int64 = 5
)

// WithDefaults returns a copy of cc with every unset defaulted field set.
func WithDefaults(in *collabv1.CollabCluster) *collabv1.CollabCluster {
	cc := in.DeepCopy()
	s := &cc.Spec
	r := &s.Runtime
	if r.Replicas == nil {
		r.Replicas = ptr.To(DefaultReplicas)
	}
	if r.TerminationGracePeriodSeconds == nil {
		r.TerminationGracePeriodSeconds = ptr.To(DefaultGracePeriodSeconds)
	}
	if r.Auth.Mode == "" {
		r.Auth.Mode = collabv1.AuthModeJWT
	}
	if r.Flush.Interval == nil {
		r.Flush.Interval = &metav1.Duration{Duration: DefaultFlushInterval}
	}
	if r.Flush.BatchSize == nil {
		r.Flush.BatchSize = ptr.To(DefaultFlushBatch)
	}
	if s.Redis == nil {
		s.Redis = &collabv1.RedisSpec{}
	}
	if s.Postgres == nil {
		s.Postgres = &collabv1.PostgresSpec{}
	}
	if s.Redis.Managed == nil && s.Redis.External == nil {
		s.Redis.Managed = &collabv1.ManagedRedis{}
	}
	if m := s.Redis.Managed; m != nil {
		if m.Image == "" {
			m.Image = DefaultRedisImage
		}
		if m.AppendFsync == "" {
			m.AppendFsync = DefaultAppendFsync
		}
		if m.Storage.Size == "" {
			m.Storage.Size = DefaultStorageSize
		}
	}
	if s.Postgres.Managed == nil && s.Postgres.External == nil && s.Postgres.CloudNativePG == nil {
		s.Postgres.Managed = &collabv1.ManagedPostgres{}
	}
	if m := s.Postgres.Managed; m != nil {
		if m.Image == "" {
			m.Image = DefaultPostgresImage
		}
		if m.Storage.Size == "" {
			m.Storage.Size = DefaultStorageSize
		}
	}
	if c := s.Postgres.CloudNativePG; c != nil {
		if c.Instances == nil {
			c.Instances = ptr.To(DefaultCNPGInstances)
		}
		if c.Storage.Size == "" {
			c.Storage.Size = DefaultStorageSize
		}
	}
	if gw := s.Gateway; gw != nil {
		if gw.RequestTimeoutSeconds == nil {
			gw.RequestTimeoutSeconds = ptr.To(DefaultProxyTimeoutSeconds)
		}
		defaultAffinity(&gw.SessionAffinity)
	}
	if s.Monitoring != nil {
		defaultMonitoring(s.Monitoring)
	}
	ing := &s.Ingress
	if ing.Controller == "" {
		ing.Controller = collabv1.IngressControllerAuto
	}
	if ing.ProxyTimeoutSeconds == 0 {
		ing.ProxyTimeoutSeconds = DefaultProxyTimeoutSeconds
	}
	defaultAffinity(&ing.SessionAffinity)
	if s.StorageRetentionPolicy == "" {
		s.StorageRetentionPolicy = collabv1.StorageRetain
	}
	return cc
}

func defaultAffinity(a *collabv1.SessionAffinitySpec) {
	if a.Mode == "" {
		a.Mode = collabv1.SessionAffinityCookie
	}
	if a.CookieName == "" {
		a.CookieName = DefaultCookieName
	}
	if a.CookieMaxAgeSeconds == 0 {
		a.CookieMaxAgeSeconds = DefaultCookieMaxAge
	}
}

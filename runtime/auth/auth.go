// Package auth decides who a connection is and what it may do: HS256 JWTs
// signed with a shared key, or an anonymous mode for local use.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tandem-dev/tandem/runtime/store"
)

// Perm is what a connection may do in a document.
type Perm string

const (
	PermRead  Perm = "read"
	PermWrite Perm = "write"
	// PermAdmin may use the admin API (list, delete, export) on the
	// documents its patterns grant, and edit them like PermWrite.
	PermAdmin Perm = "admin"
)

// Valid reports whether p is a known permission.
func (p Perm) Valid() bool { return p == PermRead || p == PermWrite || p == PermAdmin }

// MinKeyBytes is the shortest accepted HS256 key (RFC 7518: at least the
// hash size).
const MinKeyBytes = 32

// Identity is an authenticated user and their permission on one document.
type Identity struct {
	User store.User
	Perm Perm
	// Anonymous: nobody was authenticated (anonymous mode); see ForClient.
	Anonymous bool
	// ValidFor is how long from the moment of authentication the token
	// stays acceptable (its expiry plus Leeway); 0 when it never expires
	// (anonymous mode). An open connection ends when it runs out, unless
	// the client hands over a fresh token.
	ValidFor time.Duration
}

// Leeway is how long after its expiry a token is still accepted, for clock
// skew between the issuer and this server.
const Leeway = 5 * time.Second

// ForClient returns the identity a connection with client id client acts
// as. An authenticated identity is returned as is. An anonymous one gets a
// user id derived from the client id: the document keys resubmissions and
// acks by user and client id together, so an anonymous user must stay the
// same user across the reconnects of one client. (Anonymous mode
// authenticates nobody, so it cannot keep users apart either.)
func (i Identity) ForClient(client string) Identity {
	if !i.Anonymous {
		return i
	}
	sum := sha256.Sum256([]byte(client))
	i.User.ID = "anon-" + hex.EncodeToString(sum[:5])
	i.User.Color = ColorFor(i.User.ID)
	return i
}

// MaxNameRunes bounds a display name chosen in anonymous mode.
const MaxNameRunes = 40

// WithProfile returns the identity with the display name and colour the
// client chose, in anonymous mode only: nobody is authenticated there, so a
// chosen name claims nothing, and a browser can keep the same look across
// reloads although its client id (and so its user id) is new. An
// authenticated identity is returned as is (its name comes from the token).
// A name that is empty after trimming, longer than MaxNameRunes, not valid
// UTF-8 or holding control or format characters (U+0000, line breaks,
// bidi overrides) is ignored, as is a colour that is not #rrggbb; the
// generated one stays. Pages must still escape names when drawing them.
func (i Identity) WithProfile(name, color string) Identity {
	if !i.Anonymous {
		return i
	}
	if n, ok := cleanName(name); ok {
		i.User.Name = n
	}
	if validColor(color) {
		i.User.Color = strings.ToLower(color)
	}
	return i
}

func cleanName(name string) (string, bool) {
	name = strings.TrimSpace(name)
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxNameRunes {
		return "", false
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			return "", false
		}
	}
	return name, true
}

func validColor(c string) bool {
	if len(c) != 7 || c[0] != '#' {
		return false
	}
	for _, b := range []byte(c[1:]) {
		switch {
		case b >= '0' && b <= '9', b >= 'a' && b <= 'f', b >= 'A' && b <= 'F':
		default:
			return false
		}
	}
	return true
}

// CanWrite reports whether the identity may submit operations.
func (i Identity) CanWrite() bool { return i.Perm == PermWrite || i.Perm == PermAdmin }

// Admin is an authenticated holder of an admin token: Docs are the
// patterns (see MatchDoc) of the documents it administers.
type Admin struct {
	User store.User
	Docs []string
}

// Allows reports whether the admin token grants doc.
func (a Admin) Allows(doc string) bool { return MatchDoc(a.Docs, doc) }

// AdminAuthenticator is implemented by authenticators that can vouch for
// admin tokens. Anonymous mode cannot: it authenticates nobody, so the
// admin API is refused there.
type AdminAuthenticator interface {
	AuthenticateAdmin(token string) (Admin, error)
}

// Error is an authentication or authorization failure; Code is
// protocol.CodeUnauthorized or protocol.CodeForbidden.
type Error struct {
	Code string
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Codes mirrored from the protocol package (kept here to avoid a cycle).
const (
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
)

// Authenticator turns a bearer token into an identity for one document.
type Authenticator interface {
	Authenticate(token, doc string) (Identity, error)
}

// Claims are the token's claims.
type Claims struct {
	Name string   `json:"name,omitempty"`
	Docs []string `json:"docs"`
	Perm Perm     `json:"perm"`
	jwt.RegisteredClaims
}

// JWT verifies HS256 tokens.
type JWT struct {
	key []byte
	now func() time.Time
}

// NewJWT returns a verifier for key; now may be nil (time.Now).
func NewJWT(key []byte, now func() time.Time) (*JWT, error) {
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("jwt key is %d bytes, need at least %d", len(key), MinKeyBytes)
	}
	if now == nil {
		now = time.Now
	}
	return &JWT{key: key, now: now}, nil
}

// Authenticate implements Authenticator.
func (j *JWT) Authenticate(token, doc string) (Identity, error) {
	c, err := j.parse(token)
	if err != nil {
		return Identity{}, err
	}
	if !MatchDoc(c.Docs, doc) {
		return Identity{}, &Error{Code: CodeForbidden, Msg: fmt.Sprintf("token does not grant document %q", doc)}
	}
	name := c.Name
	if name == "" {
		name = c.Subject
	}
	// ExpiresAt is required, so it is set.
	validFor := c.ExpiresAt.Add(Leeway).Sub(j.now())
	return Identity{User: store.User{ID: c.Subject, Name: name, Color: ColorFor(c.Subject)}, Perm: c.Perm, ValidFor: validFor}, nil
}

// AuthenticateAdmin implements AdminAuthenticator: the token must be valid
// and carry the admin permission.
func (j *JWT) AuthenticateAdmin(token string) (Admin, error) {
	c, err := j.parse(token)
	if err != nil {
		return Admin{}, err
	}
	if c.Perm != PermAdmin {
		return Admin{}, &Error{Code: CodeForbidden, Msg: fmt.Sprintf("token permission is %q; the admin API needs %q", c.Perm, PermAdmin)}
	}
	name := c.Name
	if name == "" {
		name = c.Subject
	}
	return Admin{User: store.User{ID: c.Subject, Name: name, Color: ColorFor(c.Subject)}, Docs: c.Docs}, nil
}

// parse verifies token and its claims, whatever document it is for.
func (j *JWT) parse(token string) (Claims, error) {
	if token == "" {
		return Claims{}, &Error{Code: CodeUnauthorized, Msg: "missing token"}
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return j.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(j.now),
		jwt.WithLeeway(Leeway),
	)
	if err != nil {
		msg := "invalid token"
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			msg = "token expired"
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			msg = "token signature invalid"
		case errors.Is(err, jwt.ErrTokenMalformed):
			msg = "token malformed"
		}
		return Claims{}, &Error{Code: CodeUnauthorized, Msg: msg, Err: err}
	}
	if c.Subject == "" {
		return Claims{}, &Error{Code: CodeUnauthorized, Msg: "token has no subject"}
	}
	if strings.IndexByte(c.Subject, 0) >= 0 {
		// The subject is stored as the author of every operation, and
		// PostgreSQL cannot hold U+0000 (see protocol.CheckText).
		return Claims{}, &Error{Code: CodeUnauthorized, Msg: "token subject contains U+0000"}
	}
	if !c.Perm.Valid() {
		return Claims{}, &Error{Code: CodeUnauthorized, Msg: fmt.Sprintf("token permission %q is not read, write or admin", c.Perm)}
	}
	return c, nil
}

// MatchDoc reports whether doc is granted by patterns: an exact id, or a
// prefix ending in "*" ("team-*"; "*" alone grants every document).
func MatchDoc(patterns []string, doc string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(doc, prefix) {
				return true
			}
		} else if p == doc {
			return true
		}
	}
	return false
}

// MintOptions describe a token to mint.
type MintOptions struct {
	Subject string
	Name    string
	Docs    []string
	Perm    Perm
	TTL     time.Duration
	Now     time.Time // zero: time.Now()
}

// Mint signs a token with key.
func Mint(key []byte, o MintOptions) (string, error) {
	if len(key) < MinKeyBytes {
		return "", fmt.Errorf("jwt key is %d bytes, need at least %d", len(key), MinKeyBytes)
	}
	if o.Subject == "" {
		return "", errors.New("mint token: subject is required")
	}
	if len(o.Docs) == 0 {
		return "", errors.New("mint token: at least one document or pattern is required")
	}
	if !o.Perm.Valid() {
		return "", fmt.Errorf("mint token: permission %q is not read, write or admin", o.Perm)
	}
	if o.TTL <= 0 {
		return "", errors.New("mint token: ttl must be positive")
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := Claims{Name: o.Name, Docs: o.Docs, Perm: o.Perm, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   o.Subject,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(o.TTL)),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// Anonymous lets everyone in with write permission and a generated name.
type Anonymous struct{}

// Authenticate implements Authenticator; the token is ignored.
func (Anonymous) Authenticate(token, doc string) (Identity, error) {
	id := "anon-" + randomString(10)
	return Identity{User: store.User{ID: id, Name: randomName(), Color: ColorFor(id)}, Perm: PermWrite, Anonymous: true}, nil
}

var (
	adjectives = [...]string{"Amber", "Brave", "Calm", "Deft", "Eager", "Fuzzy", "Gentle", "Happy", "Keen", "Lucky", "Mellow", "Nimble", "Quiet", "Swift", "Witty", "Zesty"}
	animals    = [...]string{"Otter", "Falcon", "Badger", "Heron", "Lynx", "Panda", "Koala", "Marten", "Puffin", "Gecko", "Bison", "Wren", "Ibex", "Newt", "Orca", "Yak"}
	palette    = [...]string{"#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42a5a5", "#f032e6", "#808000", "#9a6324", "#000075", "#c2185b", "#00897b"}
)

// ColorFor picks a stable color for a user id.
func ColorFor(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	return palette[h.Sum32()%uint32(len(palette))]
}

func randomName() string {
	return adjectives[randIndex(len(adjectives))] + " " + animals[randIndex(len(animals))]
}

func randIndex(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return 0
	}
	return int(v.Int64())
}

func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[randIndex(len(alphabet))]
	}
	return string(b)
}

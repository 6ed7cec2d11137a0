package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/repo/forge"
	"github.com/techbossai/techboss/internal/sandbox"
)

// appCredential is a GitHub App credential stored as a secret's value:
// {"app_id": 123 (or the App's client ID), "installation_id": 456,
// "private_key": "-----BEGIN RSA PRIVATE KEY-----..."}. The broker signs
// a JWT with the key and trades it for short-lived installation tokens,
// each restricted to one repository; the key never leaves the server.
type appCredential struct {
	AppID          json.RawMessage `json:"app_id"`
	InstallationID int64           `json:"installation_id"`
	PrivateKey     string          `json:"private_key"`
}

// parseApp reads a secret's value as a GitHub App credential; ok is false
// for any other kind of credential (a token).
func parseApp(name, v string) (issuer string, c appCredential, ok bool, err error) {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "{") {
		return "", c, false, nil
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return "", c, true, errs.E(errs.Dependency, "credential %q: a JSON credential is a GitHub App's {\"app_id\", \"installation_id\", \"private_key\"}: %s", name, jsonProblem(err))
	}
	var id any
	if err := json.Unmarshal(c.AppID, &id); err == nil {
		switch x := id.(type) {
		case float64:
			issuer = strconv.FormatInt(int64(x), 10)
		case string:
			issuer = x
		}
	}
	switch {
	case issuer == "" || issuer == "0":
		return "", c, true, errs.E(errs.Dependency, "credential %q: app_id is required (the App's ID or client ID)", name)
	case c.InstallationID <= 0:
		return "", c, true, errs.E(errs.Dependency, "credential %q: installation_id is required", name)
	case !strings.Contains(c.PrivateKey, "PRIVATE KEY-----"):
		return "", c, true, errs.E(errs.Dependency, "credential %q: private_key is required (the App's PEM private key)", name)
	}
	return issuer, c, true, nil
}

// jsonProblem names what is wrong with a JSON value without echoing it
// (the value holds a private key).
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("not valid JSON (at byte %d)", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("%s has the wrong type", te.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "not valid JSON"
}

// appToken is a cached installation token.
type appToken struct {
	token   string
	expires time.Time
}

// appTokenMargin is how long before its expiry a cached installation
// token is replaced (GitHub's last an hour).
const appTokenMargin = 5 * time.Minute

// installationToken returns an installation token of the App credential
// c for the repository g (from the cache until appTokenMargin before its
// expiry): fetch-only repositories get a token that may only read.
func (b *Broker) installationToken(ctx context.Context, ownerID, name, value, issuer string, c appCredential, g sandbox.GitRepo, rm sandbox.Remote) (string, error) {
	repoName := strings.TrimSuffix(path.Base(rm.Path), ".git")
	readOnly := g.Access == sandbox.AccessFetch
	sum := sha256.Sum256([]byte(value)) // a rotated secret does not reuse its predecessor's tokens
	key := strings.Join([]string{ownerID, name, hex.EncodeToString(sum[:]), rm.Key(), strconv.FormatBool(readOnly)}, "\x00")
	now := b.cfg.Now()
	b.appMu.Lock()
	if t, ok := b.appTokens[key]; ok && now.Before(t.expires.Add(-appTokenMargin)) {
		b.appMu.Unlock()
		return t.token, nil
	}
	b.appMu.Unlock()

	pk, err := jwt.ParseRSAPrivateKeyFromPEM([]byte(c.PrivateKey))
	if err != nil {
		return "", errs.E(errs.Dependency, "credential %q: private_key is not an RSA private key in PEM form", name)
	}
	// GitHub takes a JWT of at most ten minutes; issued a minute early
	// for clock drift, as GitHub advises.
	signed, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{
		Issuer:    issuer,
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(now.Add(9 * time.Minute)),
	}).SignedString(pk)
	if err != nil {
		return "", fmt.Errorf("sign the App's JWT: %w", err)
	}
	tok, exp, err := forge.InstallationToken(ctx, forge.InstallationRequest{
		Host: rm.Host, APIURL: g.APIURL, JWT: signed, InstallationID: c.InstallationID,
		Repository: repoName, ReadOnly: readOnly, HTTP: b.client,
	})
	if err != nil {
		return "", err
	}
	if exp.IsZero() {
		exp = now.Add(time.Hour)
	}
	b.appMu.Lock()
	for k, t := range b.appTokens {
		if !now.Before(t.expires) {
			delete(b.appTokens, k)
		}
	}
	b.appTokens[key] = appToken{token: tok, expires: exp}
	b.appMu.Unlock()
	b.log.InfoContext(ctx, "git broker: GitHub App installation token minted", "owner_id", ownerID, "credential", name,
		"app", issuer, "installation_id", c.InstallationID, "repo", rm.Key(), "read_only", readOnly, "expires_at", exp.UTC())
	return tok, nil
}

// credential returns the user name and password the broker presents
// upstream for g, from the stored secret: a token ("user:token" names
// the user), or a GitHub App's installation token.
func (b *Broker) credential(ctx context.Context, ownerID string, g sandbox.GitRepo, rm sandbox.Remote) (string, string, error) {
	if b.cfg.Reveal == nil {
		return "", "", errs.E(errs.Unavailable, "the secret store is not configured")
	}
	v, err := b.cfg.Reveal(ctx, ownerID, g.Credential)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return "", "", errs.E(errs.Dependency, "credential %q: no such secret", g.Credential)
		}
		return "", "", err
	}
	if credentialKind(v) == "ssh" {
		return "", "", errs.E(errs.Dependency, "credential %q is an SSH key: it opens git over SSH, not %s's API (a pull request needs a token or a GitHub App credential)", g.Credential, rm.Host)
	}
	issuer, app, isApp, err := parseApp(g.Credential, v)
	if err != nil {
		return "", "", err
	}
	if isApp {
		if ForgeOf(g, rm) != "github" {
			return "", "", errs.E(errs.Dependency, "credential %q is a GitHub App's; %s is not GitHub", g.Credential, rm.Host)
		}
		tok, err := b.installationToken(ctx, ownerID, g.Credential, v, issuer, app, g, rm)
		return "x-access-token", tok, err
	}
	user, pass := basicUser(ForgeOf(g, rm)), strings.TrimSpace(v)
	if u, p, ok := strings.Cut(pass, ":"); ok && u != "" && !strings.ContainsAny(u, " /") {
		user, pass = u, p
	}
	return user, pass, nil
}

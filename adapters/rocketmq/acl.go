package rocketmq

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/omnibus-mq/omnibus/bus"
)

// The ext fields of RocketMQ's request signature (ACL 1.0 and 2.0 alike).
const (
	extAccessKey     = "AccessKey"
	extSignature     = "Signature"
	extSecurityToken = "SecurityToken"
)

// credentials sign requests as RocketMQ's ACL checks them: the Java
// client's AclClientRPCHook adds AccessKey (and SecurityToken, when there
// is one) to the ext fields, then Signature, the HMAC-SHA1 of the other
// ext fields and the body under the secret key. Brokers check it; name
// servers ignore it. The zero value signs nothing.
type credentials struct {
	accessKey     string
	secretKey     string
	securityToken string
}

// sign returns ext with the signature fields added, or ext itself when
// there is no access key. ext is not modified: callers reuse their maps.
func (c credentials) sign(ext map[string]string, body []byte) map[string]string {
	if c.accessKey == "" {
		return ext
	}
	out := make(map[string]string, len(ext)+3)
	for k, v := range ext {
		out[k] = v
	}
	out[extAccessKey] = c.accessKey
	if c.securityToken != "" {
		out[extSecurityToken] = c.securityToken
	}
	delete(out, extSignature)
	out[extSignature] = signature(c.secretKey, out, body)
	return out
}

// signature is RocketMQ's request signature: the base64 (standard, padded)
// HMAC-SHA1, keyed with the UTF-8 bytes of secret, of the values of every
// ext field but Signature, in the order of their names, followed by the
// body. The names here are ASCII, whose byte order is the order of Java's
// String.compareTo that the broker's TreeMap uses.
func signature(secret string, ext map[string]string, body []byte) string {
	keys := make([]string, 0, len(ext))
	for k := range ext {
		if k != extSignature {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	mac := hmac.New(sha1.New, []byte(secret))
	for _, k := range keys {
		mac.Write([]byte(wireString(ext[k])))
	}
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// wireString is s as the broker reads it from the JSON header:
// encoding/json sends each byte of s that is not valid UTF-8 as U+FFFD,
// so the signature must cover that text, not the raw bytes.
func wireString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string([]rune(s))
}

// Response codes of a refused request.
const (
	respSystemError  = 1  // ACL 1.0 (RocketMQ 4.x) refuses with an AclException
	respNoPermission = 16 // NO_PERMISSION: ACL 2.0, and the broker's own permissions
)

// refusal returns bus.ErrAuth for a response that refuses the request's
// credentials (no access key, an unknown or disabled user, a bad
// signature), bus.ErrForbidden for one that refuses the authenticated
// user the operation, and nil otherwise. ACL 2.0 answers both with
// NO_PERMISSION, which the broker also uses for a topic or broker that
// is not writable; ACL 1.0 with a system error naming AclException. The
// remark tells them apart.
func refusal(code int, remark string) error {
	r := strings.ToLower(remark)
	acl1 := code == respSystemError && strings.Contains(r, "aclexception")
	if code != respNoPermission && !acl1 {
		return nil
	}
	if strings.Contains(r, "has no permission") {
		// "User:x has no permission to access Topic:y from z, ..." (2.0),
		// whose resource names may hold any of the words below.
		return bus.ErrForbidden
	}
	for _, s := range []string{
		"signature",            // "check signature failed." (2.0), "Check signature failed for accessKey=" (1.0)
		"not found",            // "User:x is not found.", "User:x not found."
		"is disabled",          // "User:x is disabled."
		"username cannot be",   // no AccessKey field
		"authentication",       // "Authentication failed. Please verify the credentials ..."
		"accesskey",            // "No accessKey is configured" (1.0)
		"no acl config",        // an unknown access key (1.0)
		"credential length is", // a malformed credential
	} {
		if strings.Contains(r, s) {
			return bus.ErrAuth
		}
	}
	if acl1 {
		// "No default permission for ...", "No permission for ..." (1.0).
		return bus.ErrForbidden
	}
	return nil
}

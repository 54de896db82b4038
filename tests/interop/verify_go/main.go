// Verifies tokenmint's access tokens with go-jose v2 (gopkg.in/square/go-jose.v2), the way a
// Go resource server would: the published JWK Set unmarshalled into jose.JSONWebKeySet, each
// token parsed and verified with the key its `kid` names (the JWK's `alg` must be the token's),
// then `typ`, issuer, audience and times checked with go-jose's jwt package.
//
// Usage: verify_go ISSUER JWKS_FILE TOKENS_FILE
//
// TOKENS_FILE is a JSON array of {"name", "audience", "token"}. Prints one JSON object: whether
// the set unmarshalled (and its kids), then one result per token.
package main

import (
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"
	"time"

	jose "gopkg.in/square/go-jose.v2"
	"gopkg.in/square/go-jose.v2/jwt"
)

type entry struct {
	Name     string `json:"name"`
	Audience string `json:"audience"`
	Token    string `json:"token"`
}

type result struct {
	Name  string `json:"name"`
	Ok    bool   `json:"ok"`
	Alg   string `json:"alg,omitempty"`
	Sub   string `json:"sub,omitempty"`
	Error string `json:"error,omitempty"`
}

type setReport struct {
	Ok    bool     `json:"ok"`
	Kids  []string `json:"kids,omitempty"`
	Error string   `json:"error,omitempty"`
}

type report struct {
	Verifier string    `json:"verifier"`
	Set      setReport `json:"set"`
	Tokens   []result  `json:"tokens"`
}

func verify(set *jose.JSONWebKeySet, issuer string, e entry) (result, error) {
	token, err := jwt.ParseSigned(e.Token)
	if err != nil {
		return result{}, err
	}
	if len(token.Headers) != 1 {
		return result{}, fmt.Errorf("%d signatures", len(token.Headers))
	}
	header := token.Headers[0]
	if typ, _ := header.ExtraHeaders[jose.HeaderType].(string); typ != "at+jwt" {
		return result{}, fmt.Errorf("typ is %q, not at+jwt", typ)
	}
	keys := set.Key(header.KeyID)
	if len(keys) != 1 {
		return result{}, fmt.Errorf("%d keys for kid %s", len(keys), header.KeyID)
	}
	key := keys[0]
	if key.Algorithm != header.Algorithm {
		return result{}, fmt.Errorf("token alg %s, key alg %s", header.Algorithm, key.Algorithm)
	}
	var claims jwt.Claims
	if err := token.Claims(key.Key, &claims); err != nil {
		return result{}, err
	}
	expected := jwt.Expected{Issuer: issuer, Audience: jwt.Audience{e.Audience}, Time: time.Now()}
	if err := claims.ValidateWithLeeway(expected, 5*time.Second); err != nil {
		return result{}, err
	}
	if claims.Expiry == nil {
		return result{}, fmt.Errorf("no exp")
	}
	return result{Name: e.Name, Ok: true, Alg: header.Algorithm, Sub: claims.Subject}, nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: verify_go ISSUER JWKS_FILE TOKENS_FILE")
		os.Exit(2)
	}
	issuer := os.Args[1]
	jwksText, err := ioutil.ReadFile(os.Args[2])
	if err != nil {
		panic(err)
	}
	tokensText, err := ioutil.ReadFile(os.Args[3])
	if err != nil {
		panic(err)
	}
	var entries []entry
	if err := json.Unmarshal(tokensText, &entries); err != nil {
		panic(err)
	}

	out := report{Verifier: "go-jose v2", Tokens: []result{}}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksText, &set); err != nil {
		out.Set = setReport{Ok: false, Error: err.Error()}
	} else {
		out.Set.Ok = true
		for _, key := range set.Keys {
			out.Set.Kids = append(out.Set.Kids, key.KeyID)
		}
		for _, e := range entries {
			r, err := verify(&set, issuer, e)
			if err != nil {
				r = result{Name: e.Name, Ok: false, Error: err.Error()}
			}
			out.Tokens = append(out.Tokens, r)
		}
	}
	text, err := json.Marshal(out)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(text))
}

package api_test

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

const scimToken = "scim-test-token-0123456789abcdef"

func scimEnv(t *testing.T, opts apitest.Options) *apitest.Env {
	opts.Identity.SCIMTokenHash = controller.HashSecret(scimToken)
	return apitest.Start(t, opts)
}

// scim sends a SCIM request as Entra ID and Okta do (application/scim+json).
func scim(t *testing.T, env *apitest.Env, want int, method, path string, body any) map[string]any {
	t.Helper()
	r := env.Do(method, "/scim/v2"+path, scimToken, body, "Content-Type", "application/scim+json")
	if r.Status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); want != 204 && !strings.HasPrefix(ct, "application/scim+json") {
		t.Fatalf("%s %s: Content-Type %q, want application/scim+json", method, path, ct)
	}
	m := map[string]any{}
	if len(r.Body) > 0 {
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, r.Body)
		}
	}
	return m
}

// entraUser is a user as Entra ID's provisioning service creates it.
func entraUser(email, given, family, work, mobile string) map[string]any {
	return map[string]any{
		"schemas":     []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
		"externalId":  strings.Split(email, "@")[0],
		"userName":    email,
		"active":      true,
		"displayName": given + " " + family,
		"emails":      []any{map[string]any{"primary": true, "type": "work", "value": email}},
		"name":        map[string]any{"formatted": given + " " + family, "familyName": family, "givenName": given},
		"phoneNumbers": []any{
			map[string]any{"type": "work", "value": work},
			map[string]any{"type": "mobile", "value": mobile, "primary": true},
		},
	}
}

func numbersOf(m map[string]any) map[string]string {
	out := map[string]string{}
	list, _ := m["phoneNumbers"].([]any)
	for _, e := range list {
		pm := e.(map[string]any)
		out[pm["type"].(string)] = pm["value"].(string)
	}
	return out
}

// Given SCIM provisioning, people are created, found, replaced and
// patched in Entra ID's and Okta's forms, numbers become published numbers
// in E.164, and a number that cannot be normalised is refused with SCIM's
// error shape.
func TestSCIM_GivenEntraAndOktaPayloads_ThenPeopleAndNumbersFollow(t *testing.T) {
	env := scimEnv(t, apitest.Options{NoPBX: true})

	// Discovery, as the library gives it.
	spc := scim(t, env, 200, "GET", "/ServiceProviderConfig", nil)
	if p, _ := spc["patch"].(map[string]any); p["supported"] != true {
		t.Fatalf("ServiceProviderConfig = %v, want patch supported", spc)
	}
	rt := scim(t, env, 200, "GET", "/ResourceTypes", nil)
	if rt["totalResults"] != float64(1) {
		t.Fatalf("ResourceTypes = %v", rt)
	}
	scim(t, env, 200, "GET", "/Schemas", nil)
	// The SCIM token is needed, and only it.
	if r := env.Do("GET", "/scim/v2/Users", "wrong-token", nil); r.Status != 401 {
		t.Fatalf("wrong SCIM token: status %d", r.Status)
	}
	if r := env.Do("GET", "/scim/v2/Users", apitest.AdminToken, nil); r.Status != 401 {
		t.Fatalf("the admin token on SCIM: status %d, want 401", r.Status)
	}

	u := scim(t, env, 201, "POST", "/Users", entraUser("pat.provisioned@example.com", "Pat", "Provisioned", "+1 202 555 0171", "(202) 555-0172"))
	id := u["id"].(string)
	if got := numbersOf(u); got["work"] != "+12025550171" || got["mobile"] != "+12025550172" {
		t.Fatalf("phoneNumbers = %v, want both in E.164", got)
	}
	if u["externalId"] != "pat.provisioned" || u["displayName"] != "Pat Provisioned" || u["active"] != true {
		t.Fatalf("user = %v", u)
	}
	// The person is in convoice's directory with those published numbers.
	var users struct {
		Users []controller.UserView `json:"users"`
	}
	env.Must(200, "GET", "/api/v1/users", apitest.AdminToken, nil).JSON(t, &users)
	found := false
	for _, v := range users.Users {
		if v.ID == id {
			found = true
			if len(v.Numbers) != 2 || v.Numbers[1].Label != "mobile" || !v.Numbers[1].Default {
				t.Fatalf("directory numbers = %+v, want work and mobile (default)", v.Numbers)
			}
		}
	}
	if !found {
		t.Fatalf("provisioned user %s not in the directory", id)
	}
	// Creating the same userName again is a uniqueness conflict.
	dup := scim(t, env, 409, "POST", "/Users", entraUser("pat.provisioned@example.com", "Pat", "Again", "+1 202 555 0171", "+1 202 555 0172"))
	if dup["scimType"] != "uniqueness" {
		t.Fatalf("duplicate = %v, want scimType uniqueness", dup)
	}

	// A number that cannot be normalised is refused, not dropped.
	bad := scim(t, env, 400, "POST", "/Users", entraUser("bad.number@example.com", "Bad", "Number", "+1 202 555 0173", "12"))
	if bad["scimType"] != "invalidValue" || bad["status"] != "400" || !strings.Contains(bad["detail"].(string), "phone number") {
		t.Fatalf("bad number = %v, want 400 invalidValue naming the number", bad)
	}
	if schemas, _ := bad["schemas"].([]any); len(schemas) != 1 || schemas[0] != "urn:ietf:params:scim:api:messages:2.0:Error" {
		t.Fatalf("bad number: schemas = %v", bad["schemas"])
	}
	if r := scim(t, env, 200, "GET", "/Users?filter="+url.QueryEscape(`userName eq "bad.number@example.com"`), nil); r["totalResults"] != float64(0) {
		t.Fatalf("the refused person exists: %v", r)
	}

	// Filter, as both providers do before creating.
	list := scim(t, env, 200, "GET", "/Users?filter="+url.QueryEscape(`userName eq "Pat.Provisioned@example.com"`), nil)
	if list["totalResults"] != float64(1) {
		t.Fatalf("filter = %v, want 1", list)
	}
	scim(t, env, 200, "GET", "/Users/"+id, nil)
	scim(t, env, 404, "GET", "/Users/no-such-id", nil)

	// Entra ID: replace the work number and the name by path, with its
	// capitalised op.
	p := scim(t, env, 200, "PATCH", "/Users/"+id, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{
			map[string]any{"op": "Replace", "path": `phoneNumbers[type eq "work"].value`, "value": "+1 202 555 0181"},
			map[string]any{"op": "Add", "path": `phoneNumbers[type eq "home"].value`, "value": "202-555-0183"},
			map[string]any{"op": "Replace", "path": "displayName", "value": "Pat P. Provisioned"},
		},
	})
	if got := numbersOf(p); got["work"] != "+12025550181" || got["home"] != "+12025550183" || got["mobile"] != "+12025550172" || p["displayName"] != "Pat P. Provisioned" {
		t.Fatalf("after Entra patch: %v numbers %v", p, got)
	}
	// A patch with a bad number is refused and changes nothing.
	scim(t, env, 400, "PATCH", "/Users/"+id, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "replace", "path": `phoneNumbers[type eq "work"].value`, "value": "not a number"}},
	})
	if got := numbersOf(scim(t, env, 200, "GET", "/Users/"+id, nil)); got["work"] != "+12025550181" {
		t.Fatalf("a refused patch changed the numbers: %v", got)
	}
	// Okta: a path-less replace with a value object.
	p = scim(t, env, 200, "PATCH", "/Users/"+id, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "replace", "value": map[string]any{"displayName": "Pat Okta"}}},
	})
	if p["displayName"] != "Pat Okta" {
		t.Fatalf("after Okta patch: %v", p)
	}
	// PUT replaces everything: one number left.
	put := entraUser("pat.provisioned@example.com", "Pat", "Put", "+1 202 555 0191", "+1 202 555 0192")
	put["phoneNumbers"] = []any{map[string]any{"type": "mobile", "value": "+1 202 555 0192"}}
	p = scim(t, env, 200, "PUT", "/Users/"+id, put)
	if got := numbersOf(p); len(got) != 1 || got["mobile"] != "+12025550192" || p["displayName"] != "Pat Put" {
		t.Fatalf("after PUT: %v numbers %v", p, got)
	}
}

// Given a provisioned person on a call with an open event stream, a
// session and a token, when Entra ID deactivates them (PATCH active
// "False"), then within seconds their call ends, their stream closes, and
// their token and session get 401; Okta's form reactivates them (old
// credentials stay revoked); DELETE removes them, their messages stay.
func TestSCIM_GivenPersonOnACall_WhenDeactivated_ThenCallStreamAndSessionEnd(t *testing.T) {
	env := scimEnv(t, apitest.Options{})
	owner := env.AddUser("Olga Owner", controller.NumberInput{Label: "work", Number: "+1 202 555 0151"})
	u := scim(t, env, 201, "POST", "/Users", entraUser("dora.deactivated@example.com", "Dora", "Deactivated", "+1 202 555 0174", "+1 202 555 0175"))
	id := u["id"].(string)
	var tok struct {
		Token string `json:"token"`
	}
	env.Must(201, "POST", "/api/v1/users/"+id+"/tokens", apitest.AdminToken, map[string]any{"name": "laptop"}).JSON(t, &tok)
	secret, err := env.Ctl.NewSession(context.Background(), id, "oidc")
	if err != nil {
		t.Fatal(err)
	}
	cookie := "convoice_session=" + secret

	var conv struct {
		ID string `json:"id"`
	}
	env.Must(201, "POST", "/api/v1/conversations", owner.Token, map[string]any{"kind": "im", "subject": "Offboarding", "participants": []string{id}}).JSON(t, &conv)
	env.Must(201, "POST", "/api/v1/conversations/"+conv.ID+"/messages", tok.Token, map[string]any{"text": "my last words"})
	stream := env.Subscribe(conv.ID, tok.Token, "")
	defer stream.Close()
	env.Must(201, "POST", "/api/v1/conversations/"+conv.ID+"/audio", tok.Token, map[string]any{"published": "work"})
	leg := func() map[string]any {
		var a struct {
			Legs []map[string]any `json:"legs"`
		}
		env.Must(200, "GET", "/api/v1/conversations/"+conv.ID+"/audio?last=true", owner.Token, nil).JSON(t, &a)
		for _, l := range a.Legs {
			if l["user_id"] == id {
				return l
			}
		}
		return nil
	}
	env.WaitFor("Dora connected", 10*time.Second, func() bool { l := leg(); return l != nil && l["state"] == "connected" })
	if env.PBXCalls() != 1 {
		t.Fatalf("PBX calls = %d, want 1", env.PBXCalls())
	}

	start := time.Now()
	d := scim(t, env, 200, "PATCH", "/Users/"+id, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "Replace", "path": "active", "value": "False"}},
	})
	if d["active"] != false {
		t.Fatalf("after deactivation: active = %v", d["active"])
	}
	rest := stream.Rest(t, 5*time.Second) // the stream ends by itself
	t.Logf("stream closed %v after deactivation (%d more events)", time.Since(start), len(rest))
	env.WaitFor("Dora's call ended", 5*time.Second, func() bool { return leg()["state"] == "ended" && env.PBXCalls() == 0 })
	if r := env.Do("GET", "/api/v1/me", tok.Token, nil); r.Status != 401 {
		t.Fatalf("token after deactivation: status %d, want 401", r.Status)
	}
	if r := env.Do("GET", "/api/v1/me", "", nil, "Cookie", cookie); r.Status != 401 {
		t.Fatalf("session after deactivation: status %d, want 401", r.Status)
	}
	if r := env.Do("POST", "/api/v1/users/"+id+"/tokens", apitest.AdminToken, nil); r.Status != 409 {
		t.Fatalf("a token for a deactivated person: status %d, want 409", r.Status)
	}

	// Okta's form reactivates; the old credentials stay revoked.
	r := scim(t, env, 200, "PATCH", "/Users/"+id, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "replace", "value": map[string]any{"active": true}}},
	})
	if r["active"] != true {
		t.Fatalf("after Okta reactivation: %v", r)
	}
	if r := env.Do("GET", "/api/v1/me", tok.Token, nil); r.Status != 401 {
		t.Fatalf("old token after reactivation: status %d, want 401", r.Status)
	}
	// Okta deactivates with the same form.
	scim(t, env, 200, "PATCH", "/Users/"+id, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "replace", "value": map[string]any{"active": false}}},
	})

	scim(t, env, 204, "DELETE", "/Users/"+id, nil)
	scim(t, env, 404, "GET", "/Users/"+id, nil)
	var msgs struct {
		Messages []struct {
			Text string `json:"text"`
		} `json:"messages"`
	}
	env.Must(200, "GET", "/api/v1/conversations/"+conv.ID+"/messages", owner.Token, nil).JSON(t, &msgs)
	if len(msgs.Messages) != 1 || msgs.Messages[0].Text != "my last words" {
		t.Fatalf("messages after removal = %+v, want theirs kept", msgs.Messages)
	}
}

// Given SCIM is not configured, /scim/v2 answers 404 in SCIM's shape.
func TestSCIM_GivenNoToken_Then404(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true, Identity: api.IdentityConfig{}})
	r := env.Do("GET", "/scim/v2/Users", scimToken, nil)
	if r.Status != 404 || !strings.Contains(string(r.Body), "not configured") {
		t.Fatalf("unconfigured SCIM: %d %s", r.Status, r.Body)
	}
}

package api

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"

	"github.com/elimity-com/scim"
	scimerrors "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/optional"
	"github.com/elimity-com/scim/schema"
	"github.com/labstack/echo/v4"
	filter "github.com/scim2/filter-parser/v2"

	"github.com/convoice/convoice/controller"
)

// SCIM 2.0 provisioning (RFC 7643/7644) at /scim/v2, on
// github.com/elimity-com/scim: it parses and validates requests against
// the core User schema, PATCH operations included (Entra ID's capitalised
// "Replace" and its "False" strings as well), parses filters, answers the
// discovery endpoints and writes RFC 7644 error bodies; scimUsers below
// maps its resources onto convoice's people.

func init() {
	// Entra ID sends booleans as strings ("False"): the library accepts
	// them only with this switch (process-wide; it touches SCIM only).
	schema.SetAllowStringValues(true)
}

const scimPrefix = "/scim/v2"

func (s *Server) mountSCIM(e *echo.Echo) {
	srv, err := scim.NewServer(&scim.ServerArgs{
		ServiceProviderConfig: &scim.ServiceProviderConfig{
			DocumentationURI: optional.NewString("https://github.com/convoice/convoice#scim-provisioning"),
			AuthenticationSchemes: []scim.AuthenticationScheme{{Type: scim.AuthenticationTypeOauthBearerToken,
				Name: "Bearer token", Description: "CONVOICE_SCIM_TOKEN", Primary: true}},
			SupportFiltering: true,
			SupportPatch:     true,
			MaxResults:       200,
		},
		ResourceTypes: []scim.ResourceType{{
			ID: optional.NewString("User"), Name: "User", Endpoint: "/Users",
			Description: optional.NewString("A person of convoice: e-mail, name, published numbers"),
			Schema:      schema.CoreUserSchema(),
			Handler:     &scimUsers{s: s},
		}},
	}, scim.WithBaseURL(strings.TrimRight(s.cfg.PublicURL, "/")+scimPrefix))
	if err != nil {
		panic("scim server: " + err.Error()) // the arguments above are fixed
	}
	h := echo.WrapHandler(http.StripPrefix("/scim", srv))
	guard := func(c echo.Context) error {
		if err := s.scimAuth(c); err != nil {
			return err
		}
		return h(c)
	}
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/Users"}, {http.MethodPost, "/Users"},
		{http.MethodGet, "/Users/:id"}, {http.MethodPut, "/Users/:id"}, {http.MethodPatch, "/Users/:id"}, {http.MethodDelete, "/Users/:id"},
		{http.MethodGet, "/ServiceProviderConfig"}, {http.MethodGet, "/ResourceTypes"}, {http.MethodGet, "/ResourceTypes/:id"},
		{http.MethodGet, "/Schemas"}, {http.MethodGet, "/Schemas/:id"},
	} {
		e.Add(r.method, scimPrefix+r.path, guard)
	}
}

// scimAuth checks the SCIM bearer token (a SCIM error body otherwise);
// failures count towards the per-address throttle like any other.
func (s *Server) scimAuth(c echo.Context) error {
	want := s.id.cfg.SCIMTokenHash
	if want == "" {
		return scimError(c, scimerrors.ScimError{Status: http.StatusNotFound, Detail: "SCIM provisioning is not configured (CONVOICE_SCIM_TOKEN)"})
	}
	if after, err := s.ctl.AuthThrottle(c.Request().Context(), c.RealIP()); err != nil {
		if after > 0 {
			c.Response().Header().Set("Retry-After", fmt.Sprint(int(after.Seconds()+0.999)))
			return scimError(c, scimerrors.ScimError{Status: http.StatusTooManyRequests, Detail: "too many failed authentications from this address"})
		}
		return err
	}
	tok := bearer(c.Request())
	if tok == "" || subtle.ConstantTimeCompare([]byte(controller.HashSecret(tok)), []byte(want)) != 1 {
		if tok != "" {
			s.ctl.AuthFailed(c.Request().Context(), c.RealIP())
		}
		s.auditAuthFailure(c, controller.Actor{}, "scim: missing or wrong token")
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="convoice SCIM"`)
		return scimError(c, scimerrors.ScimError{Status: http.StatusUnauthorized, Detail: "a valid SCIM bearer token is required"})
	}
	return nil
}

func scimError(c echo.Context, e scimerrors.ScimError) error {
	b, _ := e.MarshalJSON()
	return c.Blob(e.Status, "application/scim+json", b)
}

// scimUsers is the User resource handler.
type scimUsers struct{ s *Server }

// scimErr maps a controller error onto SCIM's error shape (RFC 7644
// §3.12): bad input is 400 invalidValue with the reason, a taken e-mail
// 409 uniqueness, an unknown id 404.
func scimErr(err error, id string) error {
	if ce, ok := controller.AsError(err); ok {
		switch ce.Kind {
		case controller.KindInvalid:
			return scimerrors.ScimError{ScimType: scimerrors.ScimTypeInvalidValue, Detail: ce.Message, Status: http.StatusBadRequest}
		case controller.KindConflict:
			return scimerrors.ScimError{ScimType: scimerrors.ScimTypeUniqueness, Detail: ce.Message, Status: http.StatusConflict}
		case controller.KindNotFound:
			return scimerrors.ScimErrorResourceNotFound(id)
		}
	}
	return err
}

func (h *scimUsers) Create(r *http.Request, attrs scim.ResourceAttributes) (scim.Resource, error) {
	p, err := personOf(attrs)
	if err != nil {
		return scim.Resource{}, err
	}
	u, err := h.s.ctl.Provisioning().Create(r.Context(), controller.SourceSCIM, p)
	if err != nil {
		return scim.Resource{}, scimErr(err, "")
	}
	return resourceOf(u), nil
}

func (h *scimUsers) Get(r *http.Request, id string) (scim.Resource, error) {
	u, err := h.s.ctl.Provisioning().Get(r.Context(), id)
	if err != nil {
		return scim.Resource{}, scimErr(err, id)
	}
	return resourceOf(u), nil
}

// GetAll lists people; a filter is applied to each person's attributes
// (the directory is small enough; userName eq "…" is the one clients use).
func (h *scimUsers) GetAll(r *http.Request, params scim.ListRequestParams) (scim.Page, error) {
	us, err := h.s.ctl.Provisioning().Find(r.Context(), controller.UserQuery{})
	if err != nil {
		return scim.Page{}, err
	}
	var match []scim.Resource
	for _, u := range us {
		res := resourceOf(u)
		if params.FilterValidator != nil {
			attrs := map[string]any{}
			for k, v := range res.Attributes {
				attrs[k] = v
			}
			attrs["id"] = u.ID
			if u.ExternalID != "" {
				attrs["externalId"] = u.ExternalID
			}
			if params.FilterValidator.PassesFilter(attrs) != nil {
				continue
			}
		}
		match = append(match, res)
	}
	page := scim.Page{TotalResults: len(match), Resources: []scim.Resource{}}
	start := max(params.StartIndex, 1) - 1
	for i := start; i < len(match) && len(page.Resources) < params.Count; i++ {
		page.Resources = append(page.Resources, match[i])
	}
	return page, nil
}

func (h *scimUsers) Replace(r *http.Request, id string, attrs scim.ResourceAttributes) (scim.Resource, error) {
	p, err := personOf(attrs)
	if err != nil {
		return scim.Resource{}, err
	}
	u, err := h.s.ctl.Provisioning().Replace(r.Context(), controller.SourceSCIM, id, p)
	if err != nil {
		return scim.Resource{}, scimErr(err, id)
	}
	return resourceOf(u), nil
}

func (h *scimUsers) Delete(r *http.Request, id string) error {
	return scimErr(h.s.ctl.Provisioning().Remove(r.Context(), controller.SourceSCIM, id), id)
}

// Patch applies the operations to the person's attributes as they are,
// then stores the result like a PUT.
func (h *scimUsers) Patch(r *http.Request, id string, ops []scim.PatchOperation) (scim.Resource, error) {
	u, err := h.s.ctl.Provisioning().Get(r.Context(), id)
	if err != nil {
		return scim.Resource{}, scimErr(err, id)
	}
	attrs := resourceOf(u).Attributes
	if u.ExternalID != "" {
		attrs["externalId"] = u.ExternalID
	}
	for _, op := range ops {
		if err := applyPatch(attrs, op); err != nil {
			return scim.Resource{}, err
		}
	}
	p, err := personOf(attrs)
	if err != nil {
		return scim.Resource{}, err
	}
	nu, err := h.s.ctl.Provisioning().Replace(r.Context(), controller.SourceSCIM, id, p)
	if err != nil {
		return scim.Resource{}, scimErr(err, id)
	}
	return resourceOf(nu), nil
}

// resourceOf is a person as a SCIM User.
func resourceOf(u controller.IdentityUser) scim.Resource {
	phones := []any{}
	for _, n := range u.Numbers {
		phones = append(phones, map[string]any{"value": n.Number, "type": n.Label, "primary": n.Default})
	}
	attrs := scim.ResourceAttributes{
		"userName":     u.Email,
		"displayName":  u.DisplayName,
		"name":         map[string]any{"formatted": u.DisplayName},
		"emails":       []any{map[string]any{"value": u.Email, "type": "work", "primary": true}},
		"phoneNumbers": phones,
		"active":       u.Active,
	}
	res := scim.Resource{ID: u.ID, Attributes: attrs, Meta: scim.Meta{Created: &u.CreatedAt}}
	if u.ExternalID != "" {
		res.ExternalID = optional.NewString(u.ExternalID)
	}
	return res
}

// get finds an attribute by name, ignoring case (SCIM names are
// case-insensitive).
func get(m map[string]any, name string) (any, string) {
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, k
		}
	}
	return nil, name
}

func str(v any) string {
	s, _ := v.(string)
	return strings.TrimSpace(s)
}

func boolOf(v any) (bool, bool) {
	switch b := v.(type) {
	case bool:
		return b, true
	case string:
		switch strings.ToLower(strings.TrimSpace(b)) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	return false, false
}

func invalid(format string, args ...any) error {
	return scimerrors.ScimError{ScimType: scimerrors.ScimTypeInvalidValue, Detail: fmt.Sprintf(format, args...), Status: http.StatusBadRequest}
}

// phoneLabel maps a SCIM phone type onto a published-number label.
func phoneLabel(t string) string {
	switch t = strings.ToLower(strings.TrimSpace(t)); t {
	case "work", "mobile", "home":
		return t
	}
	return "other" // other, fax, pager, none
}

// personOf reads a SCIM User: userName (or the primary e-mail) is the
// e-mail address, displayName (or name) the name, phoneNumbers the
// published numbers labelled by their type.
func personOf(attrs scim.ResourceAttributes) (controller.Person, error) {
	var p controller.Person
	m := map[string]any(attrs)
	v, _ := get(m, "userName")
	p.Email = str(v)
	if ems, _ := get(m, "emails"); ems != nil {
		list, _ := ems.([]any)
		var first, primary string
		for _, e := range list {
			em, _ := e.(map[string]any)
			val, _ := get(em, "value")
			if first == "" {
				first = str(val)
			}
			if pr, _ := get(em, "primary"); pr != nil {
				if b, _ := boolOf(pr); b {
					primary = str(val)
				}
			}
		}
		if !strings.Contains(p.Email, "@") {
			if primary != "" {
				p.Email = primary
			} else if first != "" {
				p.Email = first
			}
		}
	}
	v, _ = get(m, "displayName")
	p.DisplayName = str(v)
	if p.DisplayName == "" {
		if nm, _ := get(m, "name"); nm != nil {
			n, _ := nm.(map[string]any)
			f, _ := get(n, "formatted")
			p.DisplayName = str(f)
			if p.DisplayName == "" {
				g, _ := get(n, "givenName")
				fa, _ := get(n, "familyName")
				p.DisplayName = strings.TrimSpace(str(g) + " " + str(fa))
			}
		}
	}
	v, _ = get(m, "externalId")
	p.ExternalID = str(v)
	p.Active = true
	if a, _ := get(m, "active"); a != nil {
		b, ok := boolOf(a)
		if !ok {
			return p, invalid("active: %v is not true or false", a)
		}
		p.Active = b
	}
	if ph, _ := get(m, "phoneNumbers"); ph != nil {
		list, ok := ph.([]any)
		if !ok {
			return p, invalid("phoneNumbers: must be a list")
		}
		for i, e := range list {
			pm, _ := e.(map[string]any)
			val, _ := get(pm, "value")
			typ, _ := get(pm, "type")
			pr, _ := get(pm, "primary")
			def, _ := boolOf(pr)
			number := str(val)
			if number == "" {
				return p, invalid("phoneNumbers[%d].value: empty", i)
			}
			p.Numbers = append(p.Numbers, controller.NumberInput{Label: phoneLabel(str(typ)), Number: number, Default: def})
		}
	}
	return p, nil
}

// applyPatch applies one PATCH operation (RFC 7644 §3.5.2) to attrs: with
// no path the value is a map of attributes (Okta); with a path, an
// attribute, a sub-attribute (name.givenName) or the matching members of a
// multi-valued one (phoneNumbers[type eq "work"].value, as Entra ID sends).
func applyPatch(attrs scim.ResourceAttributes, op scim.PatchOperation) error {
	m := map[string]any(attrs)
	if op.Path == nil {
		vals, ok := op.Value.(map[string]any)
		if !ok {
			return invalid("an operation without a path needs an object value")
		}
		for k, v := range vals {
			name, sub, _ := strings.Cut(k, ".")
			setAttr(m, name, sub, v, op.Op)
		}
		return nil
	}
	name := op.Path.AttributePath.AttributeName
	sub := ""
	if op.Path.AttributePath.SubAttribute != nil {
		sub = *op.Path.AttributePath.SubAttribute
	}
	if op.Path.SubAttribute != nil {
		sub = *op.Path.SubAttribute
	}
	if op.Path.ValueExpression == nil {
		setAttr(m, name, sub, op.Value, op.Op)
		return nil
	}
	expr, ok := op.Path.ValueExpression.(*filter.AttributeExpression)
	if !ok || expr.Operator != filter.EQ {
		return scimerrors.ScimError{ScimType: scimerrors.ScimTypeInvalidFilter, Status: http.StatusBadRequest,
			Detail: "only filters of the form attr eq \"value\" are supported in a PATCH path"}
	}
	cur, key := get(m, name)
	list, _ := cur.([]any)
	var out []any
	found := false
	for _, e := range list {
		em, _ := e.(map[string]any)
		fv, _ := get(em, expr.AttributePath.AttributeName)
		if !strings.EqualFold(fmt.Sprint(fv), fmt.Sprint(expr.CompareValue)) {
			out = append(out, e)
			continue
		}
		found = true
		if op.Op == scim.PatchOperationRemove {
			if sub == "" {
				continue
			}
			delete(em, sub)
			out = append(out, em)
			continue
		}
		if sub == "" {
			if nv, ok := op.Value.(map[string]any); ok {
				for k, v := range nv {
					em[k] = v
				}
			}
		} else {
			em[sub] = op.Value
		}
		out = append(out, em)
	}
	if !found && op.Op != scim.PatchOperationRemove {
		nm := map[string]any{expr.AttributePath.AttributeName: expr.CompareValue}
		if sub == "" {
			if nv, ok := op.Value.(map[string]any); ok {
				for k, v := range nv {
					nm[k] = v
				}
			}
		} else {
			nm[sub] = op.Value
		}
		out = append(out, nm)
	}
	if out == nil {
		out = []any{}
	}
	m[key] = out
	return nil
}

// setAttr sets (or removes) an attribute or one of its sub-attributes.
func setAttr(m map[string]any, name, sub string, v any, op string) {
	cur, key := get(m, name)
	if sub == "" {
		switch {
		case op == scim.PatchOperationRemove:
			delete(m, key)
		case op == scim.PatchOperationAdd:
			if list, ok := cur.([]any); ok {
				if add, ok := v.([]any); ok {
					m[key] = append(list, add...)
					return
				}
			}
			m[key] = v
		default:
			m[key] = v
		}
		return
	}
	cm, _ := cur.(map[string]any)
	if cm == nil {
		cm = map[string]any{}
	}
	if op == scim.PatchOperationRemove {
		delete(cm, sub)
	} else {
		cm[sub] = v
	}
	m[key] = cm
}

#!/usr/bin/env python3
"""Static checks of the convoice lab, run by lab/check-compose.sh.

No Docker engine and no Asterisk are needed: this reads the files.

1. docker-compose.yml refers only to things that exist: build contexts,
   Dockerfiles (and what they COPY), secret files, bind mounts, named
   volumes; every *_FILE variable points at a secret the service mounts.
2. asterisk-conf/*.conf have the shape Asterisk's config parser accepts
   ([section], [section](templates), key = value, key => value, #include),
   and hang together: pjsip objects refer to objects of the right type,
   endpoint contexts exist in extensions.conf, the dialplan's applications
   are well formed, the modules convoice needs are required.
3. The lab agrees with itself: the ARI password in lab/secrets matches the
   crypt hash in ari.conf, the ARI URL's port is http.conf's, the dial routes
   name PJSIP endpoints that exist, the RTP range published is rtp.conf's.

Paths that belong to work done elsewhere (the Go command ./cmd/convoice,
freeswitch-conf/ for the optional FreeSWITCH) are warnings when missing,
errors with CHECK_STRICT=1.

Exit status 0 when there is no error; every problem is printed as
"file:line: message".
"""

import glob
import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:  # python3-yaml comes with Debian's docker-compose
    print("check_lab.py: needs PyYAML (apt-get install python3-yaml)", file=sys.stderr)
    sys.exit(2)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
STRICT = os.environ.get("CHECK_STRICT") == "1"

errors = []
warnings = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


def warn(where, msg):
    if STRICT:
        err(where, msg)
    else:
        warnings.append(f"{where}: {msg}")


def rel(path):
    return os.path.relpath(path, ROOT)


# Paths other people write; missing ones are warnings unless CHECK_STRICT=1.
ELSEWHERE = ("cmd/convoice", "freeswitch-conf")


def elsewhere(path):
    p = path.strip("./").rstrip("/")
    return any(p == e or p.startswith(e + "/") for e in ELSEWHERE)


# ---------------------------------------------------------------------------
# 1. docker-compose.yml


def dockerfile_sources(dockerfile, context):
    """Check the sources of COPY/ADD (not --from) and go build targets."""
    where = rel(dockerfile)
    with open(dockerfile, encoding="utf-8") as f:
        text = f.read()
    # Join continuation lines.
    text = re.sub(r"\\\n", " ", text)
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"(?i)^(COPY|ADD)\s+(.*)$", s)
        if m:
            args = m.group(2).split()
            if any(a.startswith("--from") for a in args):
                continue
            args = [a for a in args if not a.startswith("--")]
            if args and args[0].startswith("["):
                continue  # JSON form: not used here
            for src in args[:-1]:
                hits = glob.glob(os.path.join(context, src))
                if not hits:
                    msg = f"COPY source {src!r} does not exist in the build context"
                    (warn if elsewhere(src) else err)(f"{where}", msg)
                if src.startswith("lab/secrets"):
                    err(where, "never COPY lab/secrets into an image")
        for target in re.findall(r"go build .*?(\./[\w./-]+)\s*$", s):
            if not os.path.isdir(os.path.join(context, target)):
                warn(where, f"go build target {target} does not exist (yet)")


def check_compose():
    path = os.path.join(ROOT, "docker-compose.yml")
    where = "docker-compose.yml"
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    services = doc.get("services") or {}
    top_secrets = doc.get("secrets") or {}
    top_volumes = doc.get("volumes") or {}

    for name, spec in top_secrets.items():
        file = spec.get("file")
        if not file:
            err(where, f"secret {name} has no file")
            continue
        p = os.path.join(ROOT, file)
        if not os.path.isfile(p):
            err(where, f"secret {name}: file {file} does not exist")
            continue
        data = open(p, "rb").read()
        if not data.strip():
            err(where, f"secret {name}: {file} is empty")
        if data.endswith(b"\n"):
            warnings.append(f"{file}: ends with a newline; a reader that does not trim would send it as part of the secret")

    dockerfiles_seen = set()
    for svc, spec in services.items():
        sw = f"{where}: service {svc}"
        build = spec.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if build:
            ctx = os.path.normpath(os.path.join(ROOT, build.get("context", ".")))
            if not os.path.isdir(ctx):
                err(sw, f"build context {build.get('context')} does not exist")
            else:
                df = os.path.normpath(os.path.join(ctx, build.get("dockerfile", "Dockerfile")))
                if not os.path.isfile(df):
                    err(sw, f"Dockerfile {rel(df)} does not exist")
                elif df not in dockerfiles_seen:
                    dockerfiles_seen.add(df)
                    dockerfile_sources(df, ctx)
        elif not spec.get("image"):
            err(sw, "neither build nor image")

        svc_secrets = []
        for s in spec.get("secrets") or []:
            sname = s if isinstance(s, str) else s.get("source")
            svc_secrets.append(sname)
            if sname not in top_secrets:
                err(sw, f"secret {sname} is not declared at the top level")

        env = spec.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        for k, v in env.items():
            if k.endswith("_FILE") and isinstance(v, str) and v.startswith("/run/secrets/"):
                sname = v[len("/run/secrets/"):]
                if sname not in svc_secrets:
                    err(sw, f"{k}={v} but the service does not mount secret {sname}")

        for vol in spec.get("volumes") or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source")
            if not src:
                continue
            if src.startswith((".", "/")):
                if not os.path.exists(os.path.join(ROOT, src)):
                    (warn if elsewhere(src) else err)(sw, f"bind mount source {src} does not exist")
            elif src not in top_volumes:
                err(sw, f"named volume {src} is not declared")

        for dep, cond in (spec.get("depends_on") or {}).items() if isinstance(spec.get("depends_on"), dict) else []:
            if dep not in services:
                err(sw, f"depends_on unknown service {dep}")
            elif isinstance(cond, dict) and cond.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                # The image may define HEALTHCHECK; compose would then still work.
                warnings.append(f"{sw}: waits for {dep} to be healthy but {dep} has no healthcheck in compose")

    # Profiles: what each brings up, and that a service only waits for
    # services that run in the same profile (or in every profile).
    profiles = sorted({p for spec in services.values() for p in spec.get("profiles") or []})
    for prof in [None] + profiles:
        active = {n for n, spec in services.items()
                  if not spec.get("profiles") or (prof and prof in spec.get("profiles"))}
        print(f"      services ({prof or 'default'}): {' '.join(sorted(active))}")
        for n in sorted(active):
            deps = services[n].get("depends_on") or []
            for dep in (deps if isinstance(deps, list) else list(deps)):
                if dep not in active:
                    err(f"{where}: service {n}", f"depends on {dep}, which profile {prof or 'default'} does not start")

    # Dockerfiles that compose does not build itself (the hand-built FreeSWITCH).
    for df in glob.glob(os.path.join(ROOT, "lab", "*", "Dockerfile")) + [os.path.join(ROOT, "Dockerfile")]:
        if os.path.isfile(df) and df not in dockerfiles_seen:
            dockerfiles_seen.add(df)
            dockerfile_sources(df, ROOT)

    # .dockerignore must not hide what the Dockerfiles copy.
    di = os.path.join(ROOT, ".dockerignore")
    if os.path.isfile(di):
        for n, line in enumerate(open(di, encoding="utf-8"), 1):
            pat = line.strip()
            if pat and not pat.startswith("#") and pat.strip("/") in ("asterisk-conf", "lab", "lab/asterisk", "freeswitch-conf", "go.mod", "go.sum", "cmd"):
                err(f".dockerignore:{n}", f"excludes {pat}, which an image build needs")
    return doc


# ---------------------------------------------------------------------------
# 2. Asterisk configuration files

SECTION = re.compile(r"^\[([^\[\]]+)\](?:\(([^()]*)\))?$")
KEYVAL = re.compile(r"^([A-Za-z0-9_.+\-]+)\s*(=>|=)\s*(.*)$")
DIRECTIVE = re.compile(r'^#(include|tryinclude|exec)\s+("[^"]+"|<[^>]+>|\S+)$')


def strip_comment(line):
    out = []
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            out.append(line[i:i + 2])
            i += 2
            continue
        if c == ";":
            if line[i:i + 3] == ";--":  # block comments: not used by us
                return None
            break
        out.append(c)
        i += 1
    return "".join(out).strip()


class Section:
    def __init__(self, name, line, templates, is_template):
        self.name = name
        self.line = line
        self.templates = templates
        self.is_template = is_template
        self.items = []  # (key, op, value, line)

    def get(self, key, sections_by_template):
        for k, _, v, _ in reversed(self.items):
            if k == key:
                return v
        for t in reversed(self.templates):
            ts = sections_by_template.get(t)
            if ts:
                v = ts.get(key, sections_by_template)
                if v is not None:
                    return v
        return None

    def values(self, key):
        return [v for k, _, v, _ in self.items if k == key]


def parse_conf(path):
    """Parse one .conf file into a list of Sections; report shape errors."""
    where = rel(path)
    sections = []
    templates = {}
    cur = None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, raw in enumerate(lines, 1):
        line = strip_comment(raw)
        if line is None:
            err(f"{where}:{n}", "block comments ;-- --; are not used in this lab; write ; comments")
            continue
        if not line:
            continue
        if line.startswith("#"):
            if not DIRECTIVE.match(line):
                err(f"{where}:{n}", f"bad directive {line!r}")
            continue
        if line.startswith("["):
            m = SECTION.match(line)
            if not m:
                err(f"{where}:{n}", f"bad section header {line!r}")
                continue
            name = m.group(1).strip()
            opts = [o.strip() for o in (m.group(2) or "").split(",") if o.strip()]
            is_template = "!" in opts
            tmpls = [o for o in opts if o not in ("!", "+")]
            for t in tmpls:
                if t not in templates:
                    err(f"{where}:{n}", f"[{name}] inherits from unknown template {t!r}")
            if "+" in opts and not any(s.name == name for s in sections):
                err(f"{where}:{n}", f"[{name}](+) adds to a section that does not exist")
            cur = Section(name, n, tmpls, is_template)
            sections.append(cur)
            if is_template:
                templates[name] = cur
            continue
        m = KEYVAL.match(line)
        if not m:
            err(f"{where}:{n}", f"not a 'key = value' line: {line!r}")
            continue
        if cur is None:
            err(f"{where}:{n}", f"{m.group(1)} outside of any [section]")
            continue
        cur.items.append((m.group(1), m.group(2), m.group(3).strip(), n))
    return sections, templates


PJSIP_TYPES = {
    "global", "system", "transport", "endpoint", "aor", "auth", "identify",
    "registration", "domain_alias", "acl", "contact", "phoneprov",
    "resource_list", "outbound-publish", "inbound-publication",
}


def balanced(s):
    depth = 0
    quote = False
    for c in s:
        if c == '"':
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not quote


def check_asterisk_conf():
    conf = os.path.join(ROOT, "asterisk-conf")
    files = sorted(glob.glob(os.path.join(conf, "*.conf")))
    if not files:
        err("asterisk-conf", "no .conf files")
        return {}
    parsed = {}
    for p in files:
        parsed[os.path.basename(p)] = parse_conf(p)

    for need in ("http.conf", "ari.conf", "pjsip.conf", "extensions.conf", "modules.conf", "logger.conf"):
        if need not in parsed:
            err("asterisk-conf", f"{need} is missing")

    # Duplicate section names: only pjsip.conf may repeat a name (with
    # different types).
    for fname, (sections, _) in parsed.items():
        if fname == "pjsip.conf":
            continue
        seen = {}
        for s in sections:
            if s.name in seen:
                err(f"asterisk-conf/{fname}:{s.line}", f"[{s.name}] defined twice (first at line {seen[s.name]})")
            seen[s.name] = s.line

    # --- extensions.conf
    contexts = set()
    if "extensions.conf" in parsed:
        sections, _ = parsed["extensions.conf"]
        contexts = {s.name for s in sections if s.name not in ("general", "globals")}
        where = "asterisk-conf/extensions.conf"
        for s in sections:
            if s.name in ("general", "globals"):
                continue
            have_exten = False
            for k, op, v, n in s.items:
                if k == "include":
                    if v not in contexts:
                        err(f"{where}:{n}", f"include => {v}: no such context")
                    continue
                if k not in ("exten", "same"):
                    err(f"{where}:{n}", f"unexpected {k!r} in context [{s.name}]")
                    continue
                if op != "=>":
                    warnings.append(f"{where}:{n}: write '{k} =>' (Asterisk accepts '=', but '=>' is the convention)")
                parts = v.split(",", 2) if k == "exten" else [None] + v.split(",", 1)
                if len(parts) != 3:
                    err(f"{where}:{n}", f"{k} needs {'extension,priority,application' if k == 'exten' else 'priority,application'}")
                    continue
                ext, prio, app = (p.strip() if p is not None else None for p in parts)
                if k == "same" and not have_exten:
                    err(f"{where}:{n}", "same => without an exten => before it")
                if k == "exten":
                    have_exten = True
                    if not ext:
                        err(f"{where}:{n}", "empty extension")
                    elif ext.startswith("_") and not re.fullmatch(r"_[0-9A-Za-z+*#.!\[\]\-]+", ext):
                        err(f"{where}:{n}", f"bad pattern {ext!r}")
                if not re.fullmatch(r"(\d+|n|hint)(\([A-Za-z0-9_-]+\))?(\+\d+)?", prio):
                    err(f"{where}:{n}", f"bad priority {prio!r}")
                if prio == "hint":
                    continue
                am = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(\((.*)\))?", app)
                if not am:
                    err(f"{where}:{n}", f"bad application call {app!r}")
                    continue
                if not balanced(app):
                    err(f"{where}:{n}", f"unbalanced parentheses or quotes in {app!r}")
                if am.group(1).lower() == "goto" and am.group(3):
                    gparts = [x.strip() for x in am.group(3).split(",")]
                    if len(gparts) == 3 and "$" not in gparts[0] and gparts[0] not in contexts:
                        err(f"{where}:{n}", f"Goto to unknown context {gparts[0]!r}")
                if am.group(1).lower() == "dial" and am.group(3):
                    target = am.group(3).split(",")[0]
                    if not re.match(r"^(PJSIP|Local)/", target):
                        err(f"{where}:{n}", f"Dial target {target!r}: this lab dials PJSIP/ or Local/ only")

    # --- pjsip.conf
    endpoints = set()
    if "pjsip.conf" in parsed:
        sections, templates = parsed["pjsip.conf"]
        where = "asterisk-conf/pjsip.conf"
        objects = {}  # (name, type) -> Section
        for s in sections:
            if s.is_template:
                continue
            t = s.get("type", templates)
            if t is None:
                err(f"{where}:{s.line}", f"[{s.name}] has no type")
                continue
            if t not in PJSIP_TYPES:
                err(f"{where}:{s.line}", f"[{s.name}] unknown type {t!r}")
            if len(s.values("type")) > 1:
                err(f"{where}:{s.line}", f"[{s.name}] sets type twice")
            if (s.name, t) in objects:
                err(f"{where}:{s.line}", f"[{s.name}] type={t} defined twice")
            objects[(s.name, t)] = s
        names = lambda typ: {n for (n, t) in objects if t == typ}
        endpoints = names("endpoint")
        if not names("transport"):
            err(where, "no transport")
        for (name, t), s in objects.items():
            loc = f"{where}:{s.line}"

            def refs(key, typ):
                v = s.get(key, templates)
                if v is None:
                    return
                for r in [x.strip() for x in v.split(",") if x.strip()]:
                    if r not in names(typ):
                        err(loc, f"[{name}] {key} = {r}: no {typ} of that name")

            if t == "endpoint":
                refs("aors", "aor")
                refs("auth", "auth")
                refs("outbound_auth", "auth")
                refs("transport", "transport")
                ctx = s.get("context", templates)
                if not ctx:
                    err(loc, f"endpoint {name} has no context (it would use 'default')")
                elif contexts and ctx not in contexts:
                    err(loc, f"endpoint {name}: context {ctx} is not in extensions.conf")
                if not s.get("aors", templates):
                    err(loc, f"endpoint {name} has no aors: it cannot be dialed")
                if (s.get("direct_media", templates) or "yes").lower() not in ("no", "false", "0"):
                    warnings.append(f"{loc}: endpoint {name}: set direct_media = no (conference audio is mixed by Asterisk)")
            elif t == "identify":
                refs("endpoint", "endpoint")
                if not s.get("match", templates):
                    err(loc, f"identify {name} has no match")
            elif t == "registration":
                refs("outbound_auth", "auth")
                refs("transport", "transport")
            elif t == "auth":
                at = s.get("auth_type", templates) or "userpass"
                if at == "userpass" and not (s.get("username", templates) and s.get("password", templates)):
                    err(loc, f"auth {name}: userpass needs username and password")
            elif t == "transport":
                if not s.get("protocol", templates) or not s.get("bind", templates):
                    err(loc, f"transport {name} needs protocol and bind")
            elif t == "aor":
                pass

    # --- modules.conf
    if "modules.conf" in parsed:
        sections, _ = parsed["modules.conf"]
        where = "asterisk-conf/modules.conf"
        mods = next((s for s in sections if s.name == "modules"), None)
        if not mods:
            err(where, "no [modules] section")
        else:
            loaded = {v for k, _, v, _ in mods.items if k in ("require", "load", "preload", "preload-require")}
            noload = {v for k, _, v, _ in mods.items if k == "noload"}
            autoload = (mods.get("autoload", {}) or "no").lower() in ("yes", "true", "1")
            for m in ("res_http_websocket.so", "res_stasis.so", "res_ari.so", "res_ari_channels.so",
                      "res_ari_bridges.so", "res_ari_events.so", "res_ari_applications.so",
                      "res_pjsip.so", "chan_pjsip.so", "bridge_softmix.so", "func_talkdetect.so"):
                if m in noload:
                    err(where, f"{m} is noloaded, but convoice needs it")
                elif m not in loaded and not autoload:
                    err(where, f"{m} is not loaded (no autoload, no load/require line)")
                elif m not in loaded:
                    warnings.append(f"{where}: {m} only comes with autoload; 'require' it")
            for k, _, v, n in mods.items:
                if k in ("require", "load", "noload", "preload", "preload-require") and not v.endswith(".so"):
                    err(f"{where}:{n}", f"{k} {v}: module names end in .so")
                if k not in ("autoload", "require", "load", "noload", "preload", "preload-require"):
                    err(f"{where}:{n}", f"unknown key {k!r}")
            if "chan_sip.so" not in noload:
                err(where, "noload => chan_sip.so is missing: on Asterisk 20 it would take port 5060 from chan_pjsip")

    # --- http.conf / ari.conf basics
    if "http.conf" in parsed:
        g = next((s for s in parsed["http.conf"][0] if s.name == "general"), None)
        if not g or (g.get("enabled", {}) or "").lower() != "yes":
            err("asterisk-conf/http.conf", "[general] enabled = yes is missing: no ARI without the HTTP server")
        elif g.get("prefix", {}):
            err("asterisk-conf/http.conf", "prefix must be empty: convoice expects ARI at /ari")
    if "ari.conf" in parsed:
        g = next((s for s in parsed["ari.conf"][0] if s.name == "general"), None)
        if not g or (g.get("enabled", {}) or "").lower() != "yes":
            err("asterisk-conf/ari.conf", "[general] enabled = yes is missing")
    return parsed


# ---------------------------------------------------------------------------
# 3. The lab against itself


def openssl_crypt(password, salt_hash):
    m = re.match(r"^\$(5|6)\$(rounds=\d+\$)?([^$]+)\$", salt_hash)
    if not m:
        return None
    args = ["openssl", "passwd", "-" + m.group(1), "-salt", m.group(3), "-stdin"]
    try:
        out = subprocess.run(args, input=password.encode(), capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.decode().strip()


def check_consistency(doc, parsed):
    services = doc.get("services") or {}
    secrets = doc.get("secrets") or {}

    def secret_value(name):
        spec = secrets.get(name) or {}
        p = os.path.join(ROOT, spec.get("file", ""))
        return open(p, encoding="utf-8").read().strip() if os.path.isfile(p) else None

    ari_users = {}
    if "ari.conf" in parsed:
        for s in parsed["ari.conf"][0]:
            if s.get("type", {}) == "user":
                ari_users[s.name] = s
    http_port = None
    if "http.conf" in parsed:
        g = next((s for s in parsed["http.conf"][0] if s.name == "general"), None)
        if g:
            http_port = g.get("bindport", {}) or "8088"
    endpoints = set()
    if "pjsip.conf" in parsed:
        sections, templates = parsed["pjsip.conf"]
        endpoints = {s.name for s in sections if not s.is_template and s.get("type", templates) == "endpoint"}

    def check_ari(where, url, user, password):
        m = re.match(r"^(https?)://([^/:]+)(?::(\d+))?(/.*)?$", url or "")
        if not m:
            err(where, f"ARI URL {url!r} is not http(s)://host:port/ari")
        else:
            port = m.group(3) or ("443" if m.group(1) == "https" else "80")
            if http_port and m.group(1) == "http" and port != http_port:
                err(where, f"ARI URL port {port} but http.conf binds {http_port}")
            if (m.group(4) or "").rstrip("/") != "/ari":
                err(where, f"ARI URL {url} must end in /ari")
        u = ari_users.get(user)
        if not u:
            err(where, f"ARI user {user!r} is not in asterisk-conf/ari.conf")
            return
        if (u.get("read_only", {}) or "no").lower() in ("yes", "true"):
            err(where, f"ARI user {user} is read_only; convoice needs to write")
        stored = u.get("password", {}) or ""
        fmt = (u.get("password_format", {}) or "plain").lower()
        if fmt != "crypt":
            err("asterisk-conf/ari.conf", f"user {user}: use password_format = crypt")
        elif not stored.startswith(("$6$", "$5$")):
            err("asterisk-conf/ari.conf", f"user {user}: expected a SHA-512 ($6$) crypt hash")
        elif password is not None:
            got = openssl_crypt(password, stored)
            if got is None:
                warnings.append(f"{where}: could not run openssl to verify the ARI password hash")
            elif got != stored:
                err(where, f"the ARI password given to convoice does not match the hash of user {user} in ari.conf")

    def check_routes(where, routes):
        for entry in [e for e in routes.split(";") if e.strip()]:
            _, _, tmpl = entry.partition("=")
            m = re.match(r"^PJSIP/[^@]*@([A-Za-z0-9_.-]+)$", tmpl.strip())
            if m and m.group(1) not in endpoints:
                err(where, f"dial route {entry!r}: PJSIP endpoint {m.group(1)!r} is not in pjsip.conf")

    for svc, spec in services.items():
        env = spec.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        where = f"docker-compose.yml: service {svc}"
        if env.get("CONVOICE_DIAL_ROUTES"):
            check_routes(where, env["CONVOICE_DIAL_ROUTES"])
        nodes = env.get("CONVOICE_PBX_NODES")
        if nodes:
            names = set()
            for node in [x for x in nodes.split(";") if x.strip()]:
                f = node.split(",")
                if len(f) != 6:
                    err(where, f"CONVOICE_PBX_NODES entry {node!r}: want name,kind,address,user,password,weight")
                    continue
                name, kind, addr, user, pw, weight = f
                if name in names:
                    err(where, f"CONVOICE_PBX_NODES: node {name} twice")
                names.add(name)
                if weight and not weight.isdigit():
                    err(where, f"CONVOICE_PBX_NODES: node {name}: weight {weight!r} is not a number")
                if kind == "asterisk":
                    host = re.sub(r"^https?://([^/:]+).*$", r"\1", addr)
                    if host not in services:
                        err(where, f"CONVOICE_PBX_NODES: node {name}: no service {host!r} in this file")
                    check_ari(f"{where}: node {name}", addr, user, pw)
                elif kind not in ("freeswitch", "emulator"):
                    err(where, f"CONVOICE_PBX_NODES: node {name}: unknown kind {kind!r}")
        elif env.get("CONVOICE_PBX") == "asterisk":
            pwfile = env.get("CONVOICE_ARI_PASSWORD_FILE", "")
            pw = secret_value(pwfile[len("/run/secrets/"):]) if pwfile.startswith("/run/secrets/") else env.get("CONVOICE_ARI_PASSWORD")
            url = env.get("CONVOICE_ARI_URL", "http://127.0.0.1:8088/ari")
            host = re.sub(r"^https?://([^/:]+).*$", r"\1", url)
            if host not in services and host not in ("127.0.0.1", "localhost"):
                err(where, f"CONVOICE_ARI_URL host {host!r} is not a service of this file")
            check_ari(where, url, env.get("CONVOICE_ARI_USER", ""), pw)
        db = env.get("CONVOICE_DB", "")
        if db.startswith("postgres://") and "postgres" in services:
            pg_env = services["postgres"].get("environment") or {}
            pwf = pg_env.get("POSTGRES_PASSWORD_FILE", "")
            pgpw = secret_value(pwf[len("/run/secrets/"):]) if pwf.startswith("/run/secrets/") else pg_env.get("POSTGRES_PASSWORD")
            m = re.match(r"^postgres://([^:@/]+)(?::([^@/]*))?@([^:/]+)(?::\d+)?/([^?]+)", db)
            if not m:
                err(where, f"CONVOICE_DB {db!r} is not postgres://user:password@host:port/db")
            else:
                if m.group(1) != pg_env.get("POSTGRES_USER", "postgres"):
                    err(where, "CONVOICE_DB user differs from POSTGRES_USER")
                if m.group(4) != pg_env.get("POSTGRES_DB", pg_env.get("POSTGRES_USER")):
                    err(where, "CONVOICE_DB database differs from POSTGRES_DB")
                if m.group(2) is not None and pgpw is not None and m.group(2) != pgpw:
                    err(where, "CONVOICE_DB password differs from the postgres_password secret")
                if m.group(3) not in services:
                    err(where, f"CONVOICE_DB host {m.group(3)} is not a service of this file")

    # RTP range published == rtp.conf
    if "rtp.conf" in parsed and "asterisk" in services:
        g = next((s for s in parsed["rtp.conf"][0] if s.name == "general"), None)
        if g:
            want = f"{g.get('rtpstart', {})}-{g.get('rtpend', {})}"
            ports = [str(p) for p in services["asterisk"].get("ports") or []]
            udp = [p for p in ports if p.endswith("/udp") and "-" in p]
            if not any(p.split(":")[-1].split("/")[0] == want for p in udp):
                err("docker-compose.yml: service asterisk", f"publish the RTP range of rtp.conf ({want}/udp)")


def main():
    doc = check_compose()
    parsed = check_asterisk_conf()
    check_consistency(doc, parsed)
    for w in warnings:
        print(f"WARN  {w}")
    for e in errors:
        print(f"ERROR {e}")
    n_conf = len(parsed)
    print(f"check_lab: {n_conf} Asterisk config files, {len(doc.get('services') or {})} compose services: "
          f"{len(errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

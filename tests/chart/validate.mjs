// Validates Kubernetes objects against the Kubernetes OpenAPI schemas
// shipped by the npm package kubernetes-models (test-only).
//
//   node validate.mjs FILE.json [FILE.json...]
//
// Each FILE holds a JSON array of {"source": "...", "object": {...}}.
// Prints one line per object ("ok <source> <kind>/<name>" or
// "INVALID <source> <kind>/<name>: <errors>") and exits 1 when any object
// is invalid or of an unknown apiVersion/kind.
//
// kubernetes-models checks types, required fields and enums, but (like the
// OpenAPI schemas it is generated from) lets unknown fields through, while
// the API server drops or rejects them (kubectl --validate=strict).  So
// field names are checked too, strictly, against the property lists of the
// package's TypeScript declarations (.d.ts), which mirror the schemas.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as models from "kubernetes-models";

const NM = join(dirname(fileURLToPath(import.meta.url)), "node_modules");
const dtsCache = new Map();

// Parses the first `export interface` of a .d.ts file into
// {props: Map(name -> type text), imports: Map(ident -> file)}.
function parseDts(file) {
	if (dtsCache.has(file))
		return dtsCache.get(file);
	let res = null;
	if (existsSync(file)) {
		const text = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
		const imports = new Map();
		for (const m of text.matchAll(/import \{ (\w+) \} from "([^"]+)";/g)) {
			let f = m[2];
			if (f.startsWith("."))
				f = resolve(dirname(file), f.replace(/\.js$/, ".d.ts"));
			else
				f = join(NM, f + ".d.ts");
			imports.set(m[1], f);
		}
		const start = text.search(/export interface \w+[^{]*\{/);
		if (start >= 0) {
			let i = text.indexOf("{", start) + 1, depth = 1;
			const body0 = i;
			while (depth > 0 && i < text.length) {
				if (text[i] === "{") depth++;
				else if (text[i] === "}") depth--;
				i++;
			}
			const body = text.slice(body0, i - 1);
			const props = new Map();
			// top-level `"name"?: TYPE;` entries (TYPE may hold braces)
			let j = 0, d = 0, cur = "";
			for (; j < body.length; j++) {
				const c = body[j];
				if (c === "{" || c === "<") d++;
				if (c === "}" || c === ">") d--;
				if (c === ";" && d === 0) {
					const m = cur.match(/^\s*"([^"]+)"\??:\s*([\s\S]*)$/);
					if (m)
						props.set(m[1], m[2].trim());
					cur = "";
				} else {
					cur += c;
				}
			}
			res = { props, imports };
		}
	}
	dtsCache.set(file, res);
	return res;
}

// Returns the unknown field paths of value against a type text.
function strictCheck(value, type, ctx, path, out) {
	if (value === null || typeof value !== "object")
		return;
	let m;
	if ((m = type.match(/^Array<([\s\S]+)>$/))) {
		if (Array.isArray(value))
			value.forEach((v, i) => strictCheck(v, m[1].trim(), ctx, `${path}/${i}`, out));
		return;
	}
	if ((m = type.match(/^\{\s*\[key: string\]:\s*([\s\S]+?);?\s*\}$/))) {
		for (const [k, v] of Object.entries(value))
			strictCheck(v, m[1].trim(), ctx, `${path}/${k}`, out);
		return;
	}
	if (!/^I\w+$/.test(type) || !ctx.imports.has(type))
		return;		/* primitive, union, or not a known interface */
	checkAgainst(value, ctx.imports.get(type), path, out);
}

function checkAgainst(value, file, path, out) {
	const iface = parseDts(file);
	if (!iface || Array.isArray(value))
		return;
	for (const [k, v] of Object.entries(value)) {
		if (!iface.props.has(k)) {
			out.push(`${path}/${k} is not a field of ${file.split("/").pop().replace(".d.ts", "")}`);
			continue;
		}
		strictCheck(v, iface.props.get(k), iface, `${path}/${k}`, out);
	}
}

function unknownFields(object) {
	const [group, version] = object.apiVersion.includes("/") ?
	    object.apiVersion.split("/") : [null, object.apiVersion];
	const file = join(NM, "kubernetes-models", group ?? "", version,
	    object.kind + ".d.ts");
	const out = [];
	if (!parseDts(file))
		return [`no type declarations at ${file}`];
	checkAgainst(object, file, "", out);
	return out;
}

function groupKey(group) {
	// rbac.authorization.k8s.io -> rbacAuthorizationK8sIo
	return group.split(".").map((p, i) => i === 0 ? p :
	    p.charAt(0).toUpperCase() + p.slice(1)).join("");
}

function modelFor(apiVersion, kind) {
	if (typeof apiVersion !== "string" || typeof kind !== "string")
		return null;
	const slash = apiVersion.indexOf("/");
	let ns;
	if (slash < 0) {
		ns = models[apiVersion];		/* core: v1 */
	} else {
		const g = models[groupKey(apiVersion.slice(0, slash))];
		ns = g ? g[apiVersion.slice(slash + 1)] : undefined;
	}
	if (!ns)
		return null;
	const M = ns[kind];
	return typeof M === "function" && M.apiVersion === apiVersion &&
	    M.kind === kind ? M : null;
}

let bad = 0, n = 0;
for (const file of process.argv.slice(2)) {
	const items = JSON.parse(readFileSync(file, "utf8"));
	for (const { source, object } of items) {
		n++;
		const id = `${source} ${object?.kind}/${object?.metadata?.name}`;
		const M = modelFor(object?.apiVersion, object?.kind);
		if (!M) {
			console.log(`INVALID ${id}: unknown apiVersion/kind ` +
			    `${object?.apiVersion} ${object?.kind}`);
			bad++;
			continue;
		}
		if (!object.metadata || typeof object.metadata.name !== "string" ||
		    object.metadata.name === "") {
			console.log(`INVALID ${id}: metadata.name is required`);
			bad++;
			continue;
		}
		const unknown = unknownFields(object);
		if (unknown.length) {
			console.log(`INVALID ${id}: unknown field(s): ${unknown.join("; ")}`);
			bad++;
			continue;
		}
		try {
			new M(object).validate();
			console.log(`ok ${id}`);
		} catch (e) {
			const errs = e.errors ? e.errors.map((x) =>
			    `${x.instancePath} ${x.message}`).join("; ") : e.message;
			console.log(`INVALID ${id}: ${errs}`);
			bad++;
		}
	}
}
console.log(`validated ${n} objects, ${bad} invalid`);
process.exit(bad ? 1 : 0);

// Validates Kubernetes objects against the Kubernetes OpenAPI schemas
// shipped by the npm package kubernetes-models (test-only).
//
//   node validate.mjs FILE.json [FILE.json...]
//
// Each FILE holds a JSON array of {"source": "...", "object": {...}}.
// Prints one line per object ("ok <source> <kind>/<name>" or
// "INVALID <source> <kind>/<name>: <errors>") and exits 1 when any object
// is invalid or of an unknown apiVersion/kind.
import { readFileSync } from "node:fs";
import * as models from "kubernetes-models";

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

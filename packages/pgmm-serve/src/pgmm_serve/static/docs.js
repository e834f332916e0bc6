// Renders /openapi.json as a list of operations with their request fields (no CDN, no framework).
"use strict";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function typeOf(schema) {
  if (!schema) return "";
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.enum) return schema.enum.join(" | ");
  if (schema.type === "array") return `list of ${typeOf(schema.items)}`;
  if (schema.$ref) return schema.$ref.split("/").pop();
  return schema.format ? `${schema.type} (${schema.format})` : schema.type || "";
}

function fieldsTable(schema) {
  const table = element("table");
  const head = element("tr");
  for (const title of ["field", "type", "required", "description"]) head.append(element("th", title));
  table.append(head);
  const required = new Set(schema.required || []);
  for (const [name, field] of Object.entries(schema.properties || {})) {
    const row = element("tr");
    row.append(element("td", name), element("td", typeOf(field)), element("td", required.has(name) ? "yes" : ""),
               element("td", field.description || ""));
    table.append(row);
  }
  return table;
}

async function render() {
  const ops = document.getElementById("ops");
  const response = await fetch("/openapi.json");
  if (!response.ok) { ops.textContent = `cannot load /openapi.json: ${response.status}`; return; }
  const spec = await response.json();
  ops.replaceChildren(element("p", spec.info.description || ""));
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const box = element("section", undefined, "op");
      box.append(element("h3", `${method.toUpperCase()} ${path}`), element("p", op.summary || ""));
      const content = (op.requestBody || {}).content || {};
      for (const [kind, body] of Object.entries(content)) {
        box.append(element("p", `body as ${kind}:`), fieldsTable(body.schema || {}));
      }
      for (const [code, answer] of Object.entries(op.responses || {})) {
        box.append(element("p", `${code}: ${answer.description || ""}`));
      }
      ops.append(box);
    }
  }
}

window.addEventListener("DOMContentLoaded", render);

// Decrypts a SOPS file with the independent `sops-age` implementation and
// prints the result as JSON. Usage: node decrypt.mjs FILE (yaml|json|env) KEYS_FILE
import { readFile } from "node:fs/promises";
import { decryptSops } from "sops-age";

const [file, fileType, keysFile] = process.argv.slice(2);
const secretKey = (await readFile(keysFile, "utf8"))
  .split("\n")
  .map((line) => line.trim())
  .find((line) => line.startsWith("AGE-SECRET-KEY-"));
const content = await readFile(file, "utf8");
const result = await decryptSops(content, { fileType, secretKey });
process.stdout.write(JSON.stringify(result));

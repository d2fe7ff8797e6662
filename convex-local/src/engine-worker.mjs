// Worker-thread entry: make TypeScript importable, then start the function runtime.
import { register } from "tsx/esm/api";
register();
await import("./engine-runtime.ts");

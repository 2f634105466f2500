// Image-pull progress as a session: `Sandbox.createWithProgress(options)`
// returns one at once; its events are an async iterable (or `recv()`), and
// `result()` gives the sandbox. The event names and fields are those of the
// upstream microsandbox SDK, so that code written against it runs here.
import { InvalidOptionError } from "./errors";
import { checkSandboxOptions, type SandboxOptions } from "./options";
import type { PullEvent } from "./image";
import { Image } from "./image";

/** One step of creating a sandbox from an image reference, in order: `resolving` first, `complete` last. */
export type PullProgress =
  | {
      /** The image reference is being resolved (always the first event). */
      type: "resolving";
      /** The image as given to create. */
      reference: string;
    }
  | {
      /** The manifest is known (fetched, or found in the cache). */
      type: "resolved";
      /** The image as given to create. */
      reference: string;
      /** Digest of the image manifest. */
      manifestDigest: string;
      /** How many layers the image has. */
      layerCount: number;
      /** Compressed bytes to download, when a download happens. */
      totalDownloadBytes?: number;
    }
  | {
      /** Bytes of a layer arrived. */
      type: "layer_download_progress";
      /** The image as given to create. */
      reference: string;
      /** The layer's position in the manifest (0: base). */
      layerIndex: number;
      /** Digest of the layer. */
      digest: string;
      /** Bytes of the layer downloaded so far. */
      downloadedBytes: number;
      /** Compressed size of the layer. */
      totalBytes?: number;
    }
  | {
      /** A layer is downloaded and verified. */
      type: "layer_download_complete";
      /** The image as given to create. */
      reference: string;
      /** The layer's position in the manifest (0: base). */
      layerIndex: number;
      /** Digest of the layer. */
      digest: string;
      /** Bytes of the layer downloaded. */
      downloadedBytes: number;
    }
  | {
      /** A layer is unpacked into the cache (or was already there). */
      type: "layer_materialize_complete";
      /** The image as given to create. */
      reference: string;
      /** The layer's position in the manifest (0: base). */
      layerIndex: number;
      /** Digest of the layer. */
      digest: string;
    }
  | {
      /** The image is ready (always the last event of a successful create). */
      type: "complete";
      /** The image as given to create. */
      reference: string;
      /** How many layers the image has. */
      layerCount: number;
    };

/** Turns the engine's pull events into {@link PullProgress} events. */
class ProgressTranslator {
  readonly #reference: string;
  readonly #layers = new Map<string, number>();
  resolved = false;
  completed = false;

  constructor(reference: string) {
    this.#reference = reference;
  }

  translate(event: PullEvent): PullProgress[] {
    const reference = this.#reference;
    const layerIndex = (digest: string) => this.#layers.get(digest) ?? -1;
    switch (event.kind) {
      case "resolved":
        this.resolved = true;
        event.layers.forEach((layer, index) => this.#layers.set(layer.digest, index));
        return [
          {
            type: "resolved",
            reference,
            manifestDigest: event.manifestDigest,
            layerCount: event.layers.length,
            totalDownloadBytes: event.totalBytes,
          },
        ];
      case "layer-progress":
        return [
          {
            type: "layer_download_progress",
            reference,
            layerIndex: layerIndex(event.digest),
            digest: event.digest,
            downloadedBytes: event.downloaded,
            totalBytes: event.size,
          },
        ];
      case "layer-done":
        return [
          {
            type: "layer_download_complete",
            reference,
            layerIndex: layerIndex(event.digest),
            digest: event.digest,
            downloadedBytes: event.size,
          },
          { type: "layer_materialize_complete", reference, layerIndex: layerIndex(event.digest), digest: event.digest },
        ];
      case "layer-cached":
        return [
          { type: "layer_materialize_complete", reference, layerIndex: layerIndex(event.digest), digest: event.digest },
        ];
      case "done":
        this.completed = true;
        return [{ type: "complete", reference, layerCount: this.#layers.size }];
    }
  }
}

/**
 * A sandbox being created, with its image-pull progress. Iterate it (or call
 * `recv()`) for {@link PullProgress} events until creation has finished, then
 * call `result()` once for the sandbox.
 */
export class CreateSession<T> implements AsyncIterable<PullProgress> {
  readonly #queue: PullProgress[] = [];
  #wake: (() => void) | undefined;
  #finished = false;
  #consumed = false;
  readonly #result: Promise<T>;

  /**
   * Starts `create` at once, handing it the progress callback.
   *
   * @internal
   */
  constructor(reference: string, create: (onProgress: (event: PullEvent) => void) => Promise<T>) {
    const translator = new ProgressTranslator(reference);
    this.#push([{ type: "resolving", reference }]);
    this.#result = create((event) => this.#push(translator.translate(event)));
    this.#result.then(
      async () => {
        // A cached image is not pulled, so the engine reported nothing: the
        // cache tells what it resolved to.
        if (!translator.resolved) {
          const cached = await Image.inspect(reference).catch(() => undefined);
          const layerCount = cached?.layers.length ?? 0;
          if (cached) {
            this.#push([{ type: "resolved", reference, manifestDigest: cached.manifestDigest, layerCount }]);
          }
          this.#push([{ type: "complete", reference, layerCount }]);
        } else if (!translator.completed) {
          this.#push(translator.translate({ kind: "done", manifestDigest: "" }));
        }
        this.#finish();
      },
      () => this.#finish(),
    );
  }

  #push(events: PullProgress[]): void {
    this.#queue.push(...events);
    this.#wake?.();
  }

  #finish(): void {
    this.#finished = true;
    this.#wake?.();
  }

  /** The next event, or null once creation has finished and every event was taken. */
  async recv(): Promise<PullProgress | null> {
    for (;;) {
      const next = this.#queue.shift();
      if (next) return next;
      if (this.#finished) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }

  /** The events until creation has finished. */
  async *[Symbol.asyncIterator](): AsyncIterator<PullProgress> {
    for (let event = await this.recv(); event !== null; event = await this.recv()) yield event;
  }

  /**
   * The created sandbox, once; rejects with the creation's error.
   *
   * @throws {InvalidOptionError} `result()` was already called (`field`: "result").
   */
  async result(): Promise<T> {
    if (this.#consumed) {
      throw new InvalidOptionError("result: already consumed (it returns the sandbox once)", "result");
    }
    this.#consumed = true;
    return this.#result;
  }
}

/**
 * `create(options)` as a {@link CreateSession}: the options are checked at
 * once, and the engine's pull events reach both the session and
 * `options.onProgress`. Serves every `createWithProgress`.
 *
 * @internal
 */
export function createSession<T>(options: SandboxOptions, create: (options: SandboxOptions) => Promise<T>): CreateSession<T> {
  checkSandboxOptions(options);
  const { onProgress } = options;
  return new CreateSession(options.image, (report) =>
    create({
      ...options,
      onProgress: (event) => {
        report(event);
        onProgress?.(event);
      },
    }),
  );
}

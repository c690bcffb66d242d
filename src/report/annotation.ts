/** A GitHub annotation (error, warning, notice) a command asks the action door to raise. */
export interface Annotation {
  level: 'error' | 'warning' | 'notice';
  message: string;
  file?: string;
  line?: number;
  title?: string;
}
